"""The request log is partitioned by month on PostgreSQL: the migration moves every row over (and
back), a month without a partition loses no row, and the months ahead are made in time."""

from datetime import UTC, datetime
from decimal import Decimal

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

from analytics.models import RequestLog
from analytics.partitions import DEFAULT_PARTITION, month_partition, month_partitions, month_start, partitions_ensure
from analytics.tasks import make_log_partitions
from tests.analytics.factories import make_log

pytestmark = [pytest.mark.django_db, pytest.mark.postgres]

NOW = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)


def _rows() -> list[dict]:
    return list(RequestLog.objects.order_by("id").values())


def _partition_of(row: RequestLog) -> str:
    with connection.cursor() as cursor:
        cursor.execute("SELECT tableoid::regclass::text FROM analytics_requestlog WHERE id = %s", [row.pk])
        return cursor.fetchone()[0]


def _table_kind() -> str:
    with connection.cursor() as cursor:
        cursor.execute("SELECT relkind FROM pg_class WHERE relname = 'analytics_requestlog'")
        return cursor.fetchone()[0]


def _migrations() -> tuple[MigrationExecutor, tuple[str, str], tuple[str, str]]:
    """The executor, the migration that partitions the log and the one before it (found by name:
    the merger may renumber it)."""
    executor = MigrationExecutor(connection)
    (partitioning,) = [node for node in executor.loader.graph.nodes
                       if node[0] == "analytics" and node[1].endswith("_request_log_partitioned_by_month")]
    (before,) = executor.loader.graph.node_map[partitioning].parents
    return executor, partitioning, before.key


def test_the_migration_moves_every_row_over_and_back(org, key):
    made = [make_log(org, key, created=datetime(2025, 9, 14, 8, tzinfo=UTC), cost=Decimal("0.400000")),
            make_log(org, key, created=datetime(2026, 2, 28, 23, 59, 59, tzinfo=UTC), run_id="r"),
            make_log(org, None, created=NOW, status=502, cache="hit")]
    rows = _rows()
    executor, partitioning, before = _migrations()

    executor.migrate([before])
    assert (_table_kind(), _rows()) == ("r", rows)

    executor.loader.build_graph()
    executor.migrate([partitioning])
    assert (_table_kind(), _rows()) == ("p", rows)
    assert [_partition_of(row) for row in made] == [
        "analytics_requestlog_p2025_09", "analytics_requestlog_p2026_02", "analytics_requestlog_p2026_11"]
    assert make_log(org, key).pk > made[-1].pk


def test_a_row_of_a_month_without_a_partition_lands_and_is_kept_when_its_month_is_made(org, key):
    far = make_log(org, key, created=datetime(2031, 5, 17, 6, tzinfo=UTC))
    row = RequestLog.objects.values().get(pk=far.pk)
    assert _partition_of(far) == DEFAULT_PARTITION

    made = partitions_ensure(now=NOW)

    assert "analytics_requestlog_p2031_05" in made
    assert _partition_of(far) == "analytics_requestlog_p2031_05"
    assert RequestLog.objects.values().get(pk=far.pk) == row


def test_a_month_made_with_rows_moved_in_has_its_statistics_at_once(org, key):
    """The planner reads a partition that never had statistics as a guess (pages of the dashboard
    4x slower until autovacuum came by): a month given rows from the DEFAULT partition is read."""
    for hour in range(5):
        make_log(org, key, created=datetime(2031, 6, 3, hour, tzinfo=UTC))

    partitions_ensure(now=NOW)

    with connection.cursor() as cursor:
        # Column statistics (building the partition's indexes set its row count only).
        cursor.execute("SELECT count(*) FROM pg_stats WHERE tablename = 'analytics_requestlog_p2031_06' "
                       "AND attname IN ('org_id', 'created', 'status')")
        assert cursor.fetchone()[0] == 3


def test_the_months_ahead_are_made_once(org, key):
    made = partitions_ensure(now=datetime(2030, 1, 15, tzinfo=UTC))
    again = partitions_ensure(now=datetime(2030, 1, 15, tzinfo=UTC))

    assert made == ["analytics_requestlog_p2030_01", "analytics_requestlog_p2030_02", "analytics_requestlog_p2030_03",
                    "analytics_requestlog_p2030_04"]
    assert again == []
    assert set(made) <= {partition.name for partition in month_partitions()}
    row = make_log(org, key, created=datetime(2030, 4, 30, 23, tzinfo=UTC))
    assert _partition_of(row) == "analytics_requestlog_p2030_04"


def test_the_beat_task_makes_a_month_ahead_that_is_missing():
    next_month = month_partition(month_start(datetime.now(UTC), months_later=1))
    with connection.cursor() as cursor:
        cursor.execute(f"DROP TABLE {next_month.name}")

    made = make_log_partitions.delay().get()

    assert made == [next_month.name]
    assert next_month in month_partitions()
