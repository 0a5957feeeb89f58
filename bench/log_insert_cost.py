"""``python -m bench.log_insert_cost``: what PostgreSQL spends on the recorder's group commit, at
each step of the log's schema.

The recorder (gateway/recorder.py) commits a batch of log rows as one INSERT per row, prepared,
and a SELECT of the transaction's position, all before one sync (one implicit transaction); a
batch of one is one INSERT … RETURNING. The same statements are sent here, through the same client
(gateway.pgpipeline), with the bench's typical row (bench.log_writes: no tags, no bodies), in
batches of ``--sizes`` rows, after the analytics app is migrated to each of ``--steps``. The
INSERT names the columns the table has at that step (0013 added ``tags``); step ``0015p`` is
0015's schema with the INSERT naming this month's partition, not the partitioned log.

Measured per batch: the server backend's CPU time (``/proc/<pid>/schedstat`` of the connection's
backend: the database must run on this machine), which other work on the machine barely moves,
and the wall time of the batch (which it does); per row, the WAL and the buffers of one INSERT
(EXPLAIN (ANALYZE, BUFFERS, WAL), rolled back). The steps are taken in turn within each of
``--rounds`` rounds, in alternate order (A B C, C B A, …), and each figure is the median over
rounds (the CPU's least too: other work only adds to it). Before each step's measure the log is
emptied and ``--seed`` rows are written (warm caches and indexes).

It EMPTIES the request log of the database it is pointed at (``--database-url``, default
``$DATABASE_URL``), and leaves it migrated to the last step: point it at a database of its own.
Not a test: nothing here asserts a time. Figures: bench/RESULTS.md, "Session 14".
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import statistics
import time
from datetime import timedelta
from pathlib import Path

from bench.big_log import _django, _tenant
from bench.log_writes import _call_row

NOW = timedelta(0)  # rows made now (``ahead`` of the clock by nothing): this month's partition
STEPS = ("0011", "0012", "0013", "0014", "0015")


def _options() -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.log_insert_cost", description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", default=",".join(STEPS), help="analytics migrations to measure at")
    parser.add_argument("--sizes", default="1,8,32", help="rows per batch")
    parser.add_argument("--rows", type=int, default=1920, help="rows written per batch size and step (1,920)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seed", type=int, default=4000, help="rows written before each step's measure")
    parser.add_argument("--tagged", action="store_true",
                        help="rows with two tags (a routing tag and a metadata pair), which the tags index takes")
    parser.add_argument("--database-url", default=os.environ.get("DATABASE_URL", ""))
    return parser.parse_args()


def _table(step: str) -> str:
    """The table the INSERT names: the log, or at step ``0015p`` (0015's schema) this month's
    partition itself, to tell the cost of routing a row to its partition."""
    if step != "0015p":
        return "analytics_requestlog"
    from datetime import UTC, datetime

    from analytics.partitions import month_partition, month_start

    return month_partition(month_start(datetime.now(UTC))).name


def _migrate_to(step: str) -> None:
    from django.core.management import call_command
    from django.db import connection
    from django.db.migrations.loader import MigrationLoader

    names = {name[:4]: name for app, name in MigrationLoader(connection).disk_migrations if app == "analytics"}
    call_command("migrate", "analytics", names[step[:4]], verbosity=0)
    with connection.cursor() as cursor:
        cursor.execute("TRUNCATE analytics_requestlog")


def _live_columns() -> set[str]:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT attname FROM pg_attribute WHERE attrelid = 'analytics_requestlog'::regclass "
                       "AND attnum > 0 AND NOT attisdropped")
        return {name for (name,) in cursor.fetchall()}


def _statements_and_params(live: set[str], table: str):
    """The recorder's statements and a row's parameters, of the columns the table has now."""
    from gateway import log_rows

    fields = log_rows._insert_fields()
    kept = [n for n, field in enumerate(fields) if field.column in live]
    columns = ", ".join(f'"{fields[n].column}"' for n in kept)
    values = ", ".join(f"${n + 1}" for n in range(len(kept)))
    if table != "analytics_requestlog":
        # A partition has no default of its own for the id: the log's identity is the parent's.
        columns, values = f'"id", {columns}', f"nextval('{_id_sequence()}'), {values}"
    insert = f"INSERT INTO {table} ({columns}) VALUES ({values})"
    statements = {**log_rows.statements(), log_rows.INSERT: insert,
                  log_rows.INSERT_RETURNING_POSITION: f"{insert} RETURNING {log_rows.POSITION_SQL}"}

    def params(row: dict) -> list:
        every = log_rows.postgres_params(row)
        return [every[n] for n in kept]
    return statements, params, insert


def _id_sequence() -> str:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_get_serial_sequence('analytics_requestlog', 'id')")
        return cursor.fetchone()[0]


def _backend_cpu_ns(pid: int) -> int:
    return int(Path(f"/proc/{pid}/schedstat").read_text().split()[0])


async def _batches(client, pid: int, params, rows, size: int) -> tuple[float, float]:
    """(backend CPU µs, median wall µs) per batch of ``size`` of ``rows``."""
    from gateway import log_rows

    walls = []
    cpu_before = _backend_cpu_ns(pid)
    for start in range(0, len(rows) - size + 1, size):
        batch = rows[start:start + size]
        if size == 1:
            statements = [(log_rows.INSERT_RETURNING_POSITION, params(batch[0]))]
        else:
            statements = [(log_rows.INSERT, params(row)) for row in batch] + [(log_rows.POSITION, None)]
        started = time.perf_counter()
        await client.execute(statements)
        walls.append((time.perf_counter() - started) * 1e6)
    return (_backend_cpu_ns(pid) - cpu_before) / 1000 / len(walls), statistics.median(walls)


def _explained(insert: str, row_params: list) -> dict[str, float]:
    """WAL bytes and records, buffers hit and dirtied, and execution time of one INSERT."""
    from django.db import connection, transaction

    text = [None if value is None else value.decode() for value in row_params]
    sql = insert
    for n in range(len(text), 0, -1):
        sql = sql.replace(f"${n}", "%s")
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(f"EXPLAIN (ANALYZE, BUFFERS, WAL) {sql}", text)
        plan = "\n".join(line for (line,) in cursor.fetchall())
        transaction.set_rollback(True)

    def first(pattern: str) -> float:
        found = re.search(pattern, plan)
        return float(found[1]) if found else 0.0
    return {"wal_bytes": first(r"WAL: records=\d+(?: fpi=\d+)? bytes=(\d+)"),
            "wal_records": first(r"WAL: records=(\d+)"),
            "hit": first(r"Buffers: shared hit=(\d+)"), "dirtied": first(r"dirtied=(\d+)"),
            "exec_ms": first(r"Execution Time: ([\d.]+)")}


def _row(org, key, n: int, options) -> dict:
    row = _call_row(org, key, n, NOW)
    return {**row, "tags": ["eu", f"customer:c{n % 50}"]} if options.tagged else row


def _measure(step: str, sizes: list[int], options, org, key) -> dict:
    from gateway import log_rows

    _migrate_to(step)
    statements, params, insert = _statements_and_params(_live_columns(), _table(step))
    seed = [_row(org, key, n, options) for n in range(options.seed)]
    rows = {size: [_row(org, key, n, options) for n in range(options.rows)] for size in sizes}
    found = asyncio.run(_commits(log_rows.connection_params(), statements, params, seed, rows))
    explained = [_explained(insert, params(_row(org, key, n, options))) for n in range(5)]
    return {"batches": found, "explain": {name: statistics.median(e[name] for e in explained)
                                          for name in explained[0]}}


async def _commits(connection_params: dict, statements: dict, params, seed: list, rows: dict) -> dict:
    """Of each batch size: (backend CPU µs, median wall µs) per batch, after the seed rows."""
    from gateway.pgpipeline import PipelinedPostgres

    client = await PipelinedPostgres.connect(connection_params, statements)
    try:
        pid = client._pgconn.backend_pid
        await _batches(client, pid, params, seed, 32)
        return {size: await _batches(client, pid, params, batch_rows, size) for size, batch_rows in rows.items()}
    finally:
        await client.close()


def main() -> None:
    options = _options()
    _django(options.database_url)
    steps = options.steps.split(",")
    sizes = [int(size) for size in options.sizes.split(",")]
    org, keys = _tenant("log insert cost", 1, 1)
    results: dict[str, list[dict]] = {step: [] for step in steps}
    for round_number in range(options.rounds):
        order = steps if round_number % 2 == 0 else steps[::-1]
        for step in order:
            results[step].append(_measure(step, sizes, options, org, keys[0]))
            print(f"round {round_number + 1} step {step}: " + ", ".join(
                f"{size}: {cpu:.0f} µs CPU, {wall:.0f} µs wall" for size, (cpu, wall) in
                results[step][-1]["batches"].items()), flush=True)
    print()
    header = " | ".join(f"{size} rows: CPU µs (least) / wall µs" for size in sizes)
    print(f"| step | {header} | WAL B/row | WAL records/row | buffers hit/row | dirtied/row | exec ms |")
    print("|---" * (len(sizes) + 6) + "|")
    for step in steps:
        cells = []
        for size in sizes:
            cpu = [r["batches"][size][0] for r in results[step]]
            wall = statistics.median(r["batches"][size][1] for r in results[step])
            cells.append(f"{statistics.median(cpu):.0f} ({min(cpu):.0f}) / {wall:.0f}")
        explain = {name: statistics.median(r["explain"][name] for r in results[step])
                   for name in results[step][0]["explain"]}
        print(f"| {step} | {' | '.join(cells)} | {explain['wal_bytes']:.0f} | {explain['wal_records']:.0f} | "
              f"{explain['hit']:.0f} | {explain['dirtied']:.0f} | {explain['exec_ms']:.3f} |")


if __name__ == "__main__":
    main()
