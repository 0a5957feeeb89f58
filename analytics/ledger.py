"""Which commits of the request log a read of it saw.

The request log is the ledger, and Redis's budget counters mirror it (``counters``). The
gateway commits a call's row first and settles its reservation in Redis after, so a counter
rebuilt from the ledger in between has already counted the call when its settle comes. To count
it once, every commit of log rows has a *position* and every read that rebuilds a counter a
*snapshot*; the counter keeps its snapshot, and a settle adds its cost only to counters whose
snapshot did not see the commit.

On PostgreSQL a position is the committing transaction's id (``pg_current_xact_id()``, an
``xid8``) and a snapshot is ``pg_current_snapshot()`` as text, ``xmin:xmax:xip,...``: a
transaction is seen if it ended before the snapshot was taken, that is below ``xmin``, or below
``xmax`` and not in the list of those still running. The counter stores apply that rule
(``counters.seen``, and ``counters/lua/ledger.lua`` inside Redis).

Other databases (the embedded SQLite, served by one process) have no transaction ids: there the
log's commits and the reads that rebuild counters take turns (``CommitTurns``), and positions are
this process's count of commits, written as a snapshot of the same shape. Since that database has
one process, and every commit and read in it must take the same turns, there is one
``CommitTurns`` per process (``_turns``); ``commit_in_turn`` and ``read_with_snapshot`` speak for it.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TypeVar

import django.db
import psycopg
from django.db import connection, transaction

T = TypeVar("T")

# Selected in the transaction that writes log rows (``INSERT ... RETURNING``, or a ``SELECT`` in its pipeline).
POSITION_SQL = "pg_current_xact_id()::text"
# Selected with a row, to tell later which commit wrote it (``row_position``).
ROW_POSITION_SQL = "xmin::text, pg_snapshot_xmax(pg_current_snapshot())::text"

# The database could not be reached (down, restarting, failed over), as Django and psycopg say
# it: a call that meets one of these before anything was sent upstream is refused with a 503.
DATABASE_ERRORS = (django.db.OperationalError, django.db.InterfaceError, psycopg.OperationalError,
                   psycopg.InterfaceError)


def row_position(xmin: int, xmax: int) -> int:
    """The position of the commit that wrote a row, from the row's ``xmin`` (that transaction's
    id without its epoch) and the ``xmax`` of a snapshot taken after it committed (every id
    below it has been handed out): ``xmax``'s epoch, or the one before if the row's id is not
    below ``xmax``'s within the epoch."""
    position = (xmax >> 32) << 32 | xmin
    return position if position < xmax else position - 2**32


class CommitTurns:
    """Commits of log rows and reads of the ledger, taking turns on a database without
    transaction ids, so that a read saw exactly the commits counted before it."""

    def __init__(self) -> None:
        # Reentrant: a read may be made of reads (a counter's rebuild reads the spend, which is
        # itself read with its snapshot); a plain lock left such a read waiting for itself.
        self._turn = threading.RLock()
        self._commits = 0

    def commit(self, write: Callable[[], None]) -> int:
        """Runs ``write`` (a commit of log rows) and returns its position."""
        with self._turn:
            write()
            self._commits += 1
            return self._commits

    def read(self, read: Callable[[], T]) -> tuple[T, str]:
        """``read()``'s result and the snapshot it read at: every commit so far, none after."""
        with self._turn:
            after = self._commits + 1
            return read(), f"{after}:{after}:"


_turns = CommitTurns()


def commit_in_turn(write: Callable[[], None]) -> int:
    """Runs ``write`` (a commit of log rows to a database without transaction ids) and returns
    its position. Commits and ``read_with_snapshot`` take turns, so a read saw exactly the
    commits counted before it."""
    return _turns.commit(write)


def read_with_snapshot(read: Callable[[], T]) -> tuple[T, str]:
    """``read()``'s result and the snapshot it read the ledger at."""
    if connection.vendor != "postgresql":
        return _turns.read(read)
    # One snapshot for the whole read: its first statement takes it, every later one reuses it.
    # Inside a caller's transaction the isolation level can no longer be chosen; the snapshot
    # is then taken first, so the read may see more commits than it says (counted twice at worst).
    outermost = not connection.in_atomic_block
    with transaction.atomic():
        with connection.cursor() as cursor:
            if outermost:
                cursor.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
            cursor.execute("SELECT pg_current_snapshot()::text")
            snapshot = cursor.fetchone()[0]
        return read(), snapshot
