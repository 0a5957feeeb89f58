"""The request log's monthly partitions, on PostgreSQL.

The log (``analytics_requestlog``) is partitioned by range of ``created``, one partition a UTC
month (``analytics_requestlog_p2026_12``), plus a DEFAULT partition that takes a row no month's
partition covers, so an insert never fails for want of one (migration 0015 moved the table over).
``partitions_ensure`` makes the months ahead (a Celery beat task, daily, and the migration); a
month whose rows landed in the DEFAULT partition meanwhile (a clock far off, the task stopped for
months) gets its partition too, and its rows are moved into it. Retention drops whole months
(analytics.services.request_logs_prune). SQLite, the embedded default, keeps one plain table:
everything here does nothing there.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from django.db import connection, transaction

TABLE = "analytics_requestlog"
DEFAULT_PARTITION = f"{TABLE}_default"
MONTHS_AHEAD = 3
# How long dropping a month waits for its locks (see partition_lock).
LOCK_TIMEOUT_MS = 5000
_MONTH_NAME = re.compile(rf"^{TABLE}_p(\d{{4}})_(\d{{2}})$")
# A request id made by the gateway (gateway.pipeline.new_request_id): ``req_``, the millisecond
# it was made in 12 hex digits, 20 random ones. Ids made before (``req_`` and 32 random digits)
# have the same shape: their "millisecond" is anywhere in 8,900 years.
_TIME_ORDERED_ID = re.compile(r"^req_([0-9a-f]{12})[0-9a-f]{20}$")
# How far a row's ``created`` may lie from its id's millisecond. The gateway reads the clock for
# the id and, a microsecond later, for the call's arrival, which is its ``created`` (and the
# reaper's row of a lost call is stamped with the same arrival): a stream logged an hour after
# it began keeps the time it began. The slack is for the clock stepping between the two reads
# (NTP) and for rows made elsewhere; a day of it costs nothing, a month's partition being the
# unit pruned: a window touches one partition, two on the first or last day of a month.
REQUEST_ID_SLACK = timedelta(days=1)
# Ids whose "millisecond" is before this (when no log of ours was yet written) are of the older
# shape: one lookup, not two (time-ordered ids began in December 2026).
TIME_ORDERED_IDS_SINCE = datetime(2024, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class MonthPartition:
    name: str
    start: datetime
    end: datetime


def month_start(moment: datetime, *, months_later: int = 0) -> datetime:
    """The start (UTC) of the month ``months_later`` months after ``moment``'s."""
    moment = moment.astimezone(UTC)
    months = moment.year * 12 + moment.month - 1 + months_later
    return datetime(months // 12, months % 12 + 1, 1, tzinfo=UTC)


def month_partition(start: datetime) -> MonthPartition:
    return MonthPartition(f"{TABLE}_p{start.year:04d}_{start.month:02d}", start, month_start(start, months_later=1))


def request_id_window(request_id: str, *, now: datetime | None = None) -> tuple[datetime, datetime] | None:
    """The span of ``created`` a row of this request id lies in, so a lookup by it reads one or
    two partitions; None for an id that holds no time. An older id may hold a plausible time by
    chance (1 in ~9,000): whoever finds no row in the window looks again without it."""
    found = _TIME_ORDERED_ID.match(request_id)
    if found is None:
        return None
    millisecond = int(found[1], 16)
    latest = (now or datetime.now(UTC)) + REQUEST_ID_SLACK
    # Compared as numbers first: most older ids' "millisecond" is past the year 9999.
    if not TIME_ORDERED_IDS_SINCE.timestamp() * 1000 <= millisecond <= latest.timestamp() * 1000:
        return None
    made = datetime.fromtimestamp(millisecond / 1000, UTC)
    return made - REQUEST_ID_SLACK, made + REQUEST_ID_SLACK


def is_partitioned() -> bool:
    if connection.vendor != "postgresql":
        return False
    with connection.cursor() as cursor:
        cursor.execute("SELECT relkind FROM pg_class WHERE oid = to_regclass(%s)", [TABLE])
        found = cursor.fetchone()
    return found is not None and found[0] == "p"


def month_partitions() -> list[MonthPartition]:
    """The log's month partitions, oldest first (the DEFAULT partition is not one)."""
    if not is_partitioned():
        return []
    with connection.cursor() as cursor:
        cursor.execute("SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
                       "WHERE i.inhparent = to_regclass(%s)", [TABLE])
        names = [name for (name,) in cursor.fetchall()]
    months = [_MONTH_NAME.match(name) for name in names]
    return sorted((month_partition(datetime(int(m[1]), int(m[2]), 1, tzinfo=UTC)) for m in months if m),
                  key=lambda partition: partition.start)


def default_partition_months() -> list[datetime]:
    """The months of the rows that landed in the DEFAULT partition (it is empty while the months
    ahead are made in time)."""
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT DISTINCT date_trunc('month', created AT TIME ZONE 'UTC') FROM {DEFAULT_PARTITION}")
        return sorted(month.replace(tzinfo=UTC) for (month,) in cursor.fetchall())


def partitions_ensure(*, now: datetime | None = None, months_ahead: int = MONTHS_AHEAD) -> list[str]:
    """Makes the partitions of this month and the ``months_ahead`` next, and of every month with
    rows in the DEFAULT partition (moving them in); returns the names of those it made. Running
    it again makes nothing."""
    if not is_partitioned():
        return []
    now = now or datetime.now(UTC)
    wanted = {month_start(now, months_later=n) for n in range(months_ahead + 1)}
    wanted.update(default_partition_months())
    have = {partition.start for partition in month_partitions()}
    made = []
    for start in sorted(wanted - have):
        partition = month_partition(start)
        if _partition_attach(partition):
            # Rows moved in: without statistics the planner guesses at the new month (a call's
            # page 4x slower, /spend/ 1.6x, until autovacuum came by), so they are read now.
            with connection.cursor() as cursor:
                cursor.execute(f"ANALYZE {connection.ops.quote_name(partition.name)}")
        made.append(partition.name)
    return made


def _columns() -> str:
    """The log's columns, as a SELECT list (generated ones are not written)."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT attname FROM pg_attribute WHERE attrelid = to_regclass(%s) AND attnum > 0 "
                       "AND NOT attisdropped AND attgenerated = '' ORDER BY attnum", [TABLE])
        return ", ".join(connection.ops.quote_name(name) for (name,) in cursor.fetchall())


@transaction.atomic
def _partition_attach(partition: MonthPartition) -> int:
    """A month's partition, made as a table of its own, given the month's rows of the DEFAULT
    partition, then attached: attaching locks the log itself only against changes of its
    definition (inserts go on), where CREATE TABLE … PARTITION OF would lock out every insert.
    The DEFAULT partition is locked meanwhile, so no row of the month lands there in between.
    Returns how many rows it moved."""
    quote = connection.ops.quote_name
    bounds = [partition.start, partition.end]
    columns, name, check = _columns(), quote(partition.name), quote(f"{partition.name}_month")
    with connection.cursor() as cursor:
        cursor.execute(f"LOCK TABLE {DEFAULT_PARTITION} IN ACCESS EXCLUSIVE MODE")
        cursor.execute(f"CREATE TABLE {name} (LIKE {TABLE} INCLUDING DEFAULTS INCLUDING GENERATED "
                       "INCLUDING CONSTRAINTS INCLUDING STORAGE INCLUDING COMMENTS)")
        cursor.execute(f"WITH moved AS (DELETE FROM {DEFAULT_PARTITION} WHERE created >= %s AND created < %s "
                       f"RETURNING {columns}) INSERT INTO {name} ({columns}) SELECT {columns} FROM moved",
                       bounds)
        moved = cursor.rowcount
        # The check lets the attach skip its scan of the partition's rows.
        cursor.execute(f"ALTER TABLE {name} ADD CONSTRAINT {check} "
                       "CHECK (created IS NOT NULL AND created >= %s AND created < %s)", bounds)
        cursor.execute(f"ALTER TABLE {TABLE} ATTACH PARTITION {name} FOR VALUES FROM (%s) TO (%s)",
                       bounds)
        cursor.execute(f"ALTER TABLE {name} DROP CONSTRAINT {check}")
    return moved


def partition_lock(partition: MonthPartition, *, lock_timeout_ms: int = LOCK_TIMEOUT_MS) -> None:
    """Locks a month's partition against inserts until the transaction ends, and bounds how long
    this transaction waits for any lock from now on: detaching takes the log's strongest lock for
    a moment, and the gateway's inserts queue behind a wait for it (a long read holding the log).
    Past ``lock_timeout_ms`` it raises django.db.OperationalError."""
    with connection.cursor() as cursor:
        cursor.execute(f"SET LOCAL lock_timeout = {int(lock_timeout_ms)}")
        cursor.execute(f"LOCK TABLE {connection.ops.quote_name(partition.name)} IN SHARE MODE")


def partition_drop(partition: MonthPartition) -> int:
    """Detaches a month's partition and drops it; returns how many rows went with it."""
    quote = connection.ops.quote_name
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(f"SELECT count(*) FROM {quote(partition.name)}")
        rows = cursor.fetchone()[0]
        cursor.execute(f"ALTER TABLE {TABLE} DETACH PARTITION {quote(partition.name)}")
        cursor.execute(f"DROP TABLE {quote(partition.name)}")
    return rows
