"""``python -m bench.log_writes``: the request log's writes at millions of rows, and its retention.

In one run: the gateway's log writer (gateway.recorder's group commits, as a worker makes them)
writes ``--writes`` rows into an empty log, ``--repeat`` times; the log is filled to ``--rows``
rows (by default all in this month, the partition written to: the worst case, a month's end);
the writer writes as many rows again; on a partitioned log it also writes by turns into this
month's partition and next month's (empty), so that both see the same machine; a month past the
retention period is filled with ``--old-month-rows`` rows, rolled up, and pruned, timed (on
PostgreSQL a partition dropped whole); last, the writer writes into the emptied log again (a
machine shared with other work drifts). Prints rows/s at each size and the ratios, the WAL
written per row (the cluster's: other databases' writes count too) and the time of the prune.
Not a test: nothing here asserts a time. See bench/README.md.

It EMPTIES the request log, the daily ledger and the rollup of the database it is pointed at
(``--database-url``, default ``$DATABASE_URL``): point it at a database of its own.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from bench.big_log import _django, _empty, _fill, _tenant


def _options() -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.log_writes", description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000, help="log rows before the second write (1,000,000)")
    parser.add_argument("--days", type=float, default=0,
                        help="days the rows span up to now (default 0: this month so far, so that all are in the "
                        "partition the writer writes to, as at the end of a month)")
    parser.add_argument("--writes", type=int, default=40_000, help="rows the writer writes each time (40,000)")
    parser.add_argument("--repeat", type=int, default=3, help="timed writes at each size (the median is taken)")
    parser.add_argument("--concurrency", type=int, default=256, help="calls handing rows over at once (256)")
    parser.add_argument("--old-month-rows", type=int, default=1_000_000,
                        help="rows of the month past retention that is pruned (1,000,000)")
    parser.add_argument("--database-url", default=os.environ.get("DATABASE_URL", ""))
    return parser.parse_args()


def _call_row(org, key, n: int, ahead: timedelta) -> dict:
    """A call's row as the gateway hands it to the recorder (``ahead`` of the clock)."""
    from gateway.pipeline import new_request_id

    return {
        "request_id": new_request_id(), "created": datetime.now(UTC) + ahead, "org_id": org.pk, "team_id": key.team_id,
        "key_id": key.pk, "key_prefix": key.prefix, "run_id": f"run-{n // 8}" if n % 4 == 0 else "",
        "model": "gemini-2.5-flash", "deployment": "flash-vertex", "provider": "vertex", "status": 200,
        "attempts": [{"deployment": "flash-vertex", "outcome": "ok", "latency_ms": 180}], "latency_ms": 200,
        "ttft_ms": 90, "prompt_tokens": 120 + n % 4000, "completion_tokens": n % 800, "cost": Decimal("0.000150"),
        "finish_reason": "stop", "cache": "miss" if n % 20 == 1 else "skip",
        "prompt_meta": {"messages": 2, "roles": ["system", "user"], "sizes": [120, 40]},
    }


def _wal_lsn() -> int:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_current_wal_lsn() - '0/0'")
        return int(cursor.fetchone()[0])


def _write(org, keys, rows: int, concurrency: int, ahead: timedelta = timedelta(0)) -> tuple[float, float]:
    """(rows/s, WAL bytes per row) of ``rows`` rows handed to the recorder by ``concurrency``
    calls at once, dated ``ahead`` of the clock."""
    from gateway.recorder import Recorder

    async def run() -> float:
        writer = Recorder()
        numbers = iter(range(rows))

        async def call() -> None:
            for n in numbers:
                await writer.record(_call_row(org, keys[n % len(keys)], n, ahead))

        await writer.record(_call_row(org, keys[0], 0, ahead))  # connected and prepared before the clock starts
        started = time.perf_counter()
        await asyncio.gather(*(call() for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
        await writer.close()
        return elapsed

    wal = _wal_lsn()
    elapsed = asyncio.run(run())
    return rows / elapsed, (_wal_lsn() - wal) / rows


def _prune_a_month(org, keys, rows: int) -> tuple[float, int, str]:
    """(seconds, rows pruned, how) of the prune of a month past retention holding ``rows`` rows."""
    from django.conf import settings
    from django.db import connection

    from analytics.partitions import month_partitions, month_start, partitions_ensure
    from analytics.services import request_logs_prune, retention_cutoff, spend_rollup

    now = datetime.now(UTC)
    old_month = month_start(retention_cutoff(now), months_later=-1)
    partitions_ensure(now=old_month, months_ahead=0)
    _fill(org, keys, rows, tag="old", end=month_start(old_month, months_later=1) - timedelta(seconds=1),
          days=(month_start(old_month, months_later=1) - old_month).days - 0.01)
    # As a month-old partition is by then: analyzed by the autovacuum and long written to disk
    # (a partition dropped with its pages still dirty pays for their writes' I/O as it goes).
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE analytics_requestlog")
        cursor.execute("CHECKPOINT")
    for _ in range(3):  # the floor the rollup reads above moves once a rollup is a second past the last
        spend_rollup()
        time.sleep(1.5)
    spend_rollup()
    had = {partition.start for partition in month_partitions()}
    started = time.perf_counter()
    pruned = request_logs_prune(now=now)
    elapsed = time.perf_counter() - started
    dropped = old_month in had and old_month not in {partition.start for partition in month_partitions()}
    how = "its partition dropped" if dropped else f"day by day ({settings.NEMO_LOG_RETENTION_MONTHS} months kept)"
    return elapsed, pruned, how


def _writes(org, keys, options, label: str) -> float:
    """The median rows/s of ``--repeat`` writes of ``--writes`` rows, each printed."""
    rates = []
    for _ in range(options.repeat):
        rate, wal = _write(org, keys, options.writes, options.concurrency)
        rates.append(rate)
        print(f"{label}: {rate:,.0f} rows/s, {wal:,.0f} B of WAL a row (the cluster's)", flush=True)
    return statistics.median(rates)


def _interleaved(org, keys, options, rows: int) -> None:
    """Writes into this month's partition (the full one) and next month's (empty, the same
    table) by turns, so that both see the same load of the machine."""
    from analytics.partitions import month_start

    now = datetime.now(UTC)
    next_month = month_start(now, months_later=1) + timedelta(days=1) - now
    full, empty = [], []
    for _ in range(options.repeat):
        full.append(_write(org, keys, options.writes, options.concurrency)[0])
        empty.append(_write(org, keys, options.writes, options.concurrency, next_month)[0])
        print(f"by turns: this month's partition ({rows:,} rows) {full[-1]:,.0f} rows/s, next month's (empty) "
              f"{empty[-1]:,.0f} rows/s", flush=True)
    print(f"by turns, ratio (full partition / empty one): {statistics.median(full) / statistics.median(empty):.2f}",
          flush=True)


def main() -> None:
    options = _options()
    _django(options.database_url)
    from django.db import connection

    from analytics.partitions import is_partitioned, month_start

    _empty()
    tag = datetime.now(UTC).strftime("%H%M%S")
    org, keys = _tenant(f"writes {tag}", 24, 4)
    print(f"request log {'partitioned by month' if is_partitioned() else 'in one table'}; "
          f"{options.writes:,} rows written by the recorder, {options.concurrency} calls at once", flush=True)
    empty = [_writes(org, keys, options, "empty log")]
    started, now = time.perf_counter(), datetime.now(UTC)
    days = options.days or (now - month_start(now)).total_seconds() / 86400
    _fill(org, keys, options.rows, tag=f"{tag}f", end=now, days=days)
    with connection.cursor() as cursor:
        cursor.execute("VACUUM ANALYZE analytics_requestlog")
        cursor.execute("SELECT count(*) FROM analytics_requestlog")
        rows = cursor.fetchone()[0]
    print(f"filled to {rows:,} rows over {days:.1f} days in {time.perf_counter() - started:.0f} s", flush=True)
    full = _writes(org, keys, options, f"at {rows:,} rows")
    if is_partitioned():
        _interleaved(org, keys, options, rows)
    elapsed, pruned, how = _prune_a_month(org, keys, options.old_month_rows)
    print(f"retention of a month past the period: {pruned:,} rows in {elapsed * 1000:,.0f} ms, {how}", flush=True)
    # The empty log again, so that a machine that got busier or quieter meanwhile shows.
    _empty()
    empty.append(_writes(org, keys, options, "empty log again"))
    print(f"write ratio (at {rows:,} rows / empty): {full / statistics.mean(empty):.2f}", flush=True)


if __name__ == "__main__":
    main()
