"""Commit positions and read snapshots of the request log (analytics.ledger): a read saw exactly
the commits that ended before it."""

import pytest
from django.db import connection

from analytics.ledger import commit_in_turn, read_with_snapshot, row_position
from counters import seen

EPOCH = 2**32


@pytest.mark.parametrize(("xmin", "xmax", "expected"), [
    (700, 900, 700),  # epoch 0
    (700, 3 * EPOCH + 900, 3 * EPOCH + 700),  # the snapshot's epoch
    (EPOCH - 5, 3 * EPOCH + 900, 3 * EPOCH - 5),  # written before the ids wrapped into xmax's epoch
    (899, 3 * EPOCH + 900, 3 * EPOCH + 899),  # the last id handed out
    (900, 3 * EPOCH + 900, 2 * EPOCH + 900),  # xmax's own id is not handed out yet: the epoch before
])
def test_a_rows_position_is_its_xmin_in_the_epoch_of_a_later_snapshot(xmin, xmax, expected):
    assert row_position(xmin, xmax) == expected


def _commit() -> int:
    """One committed transaction of this database, and its position."""
    if connection.vendor != "postgresql":
        return commit_in_turn(lambda: None)
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_current_xact_id()::text")
        return int(cursor.fetchone()[0])


@pytest.mark.django_db(transaction=True)
def test_a_read_sees_the_commits_before_it_and_none_after():
    before = _commit()
    value, snapshot = read_with_snapshot(lambda: "read")
    after = _commit()

    assert value == "read"
    assert seen(snapshot, before)
    assert not seen(snapshot, after)
    assert seen(read_with_snapshot(lambda: None)[1], after)


@pytest.mark.postgres  # elsewhere commits wait for the read
@pytest.mark.django_db(transaction=True)
def test_a_read_keeps_one_snapshot_throughout():
    from django.db import connections

    def read() -> tuple[str, str]:
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_current_snapshot()::text")
            first = cursor.fetchone()[0]
            # Another connection commits while the read goes on.
            other = connections.create_connection("default")
            try:
                other.set_autocommit(True)
                with other.cursor() as elsewhere:
                    elsewhere.execute("SELECT pg_current_xact_id()")
            finally:
                other.close()
            cursor.execute("SELECT pg_current_snapshot()::text")
            return first, cursor.fetchone()[0]

    (first, second), snapshot = read_with_snapshot(read)

    assert first == second == snapshot
