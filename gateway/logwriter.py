"""The last step of the pipeline: the request-log row, durable before the call counts as done.

One INSERT per request would cost more than the rest of the hot path (DESIGN.md), so rows are
written in group commits: every request hands its row to one committer and waits for the commit
of the small batch it landed in. While one batch commits, the next one gathers. Each batch costs
one round trip and is one transaction.

The committer also settles the batch's reservations, in one Redis call, once the rows are
committed: the rows are the ledger, and the settle tells the counter store which commit wrote
them (analytics.ledger), so a counter rebuilt from the ledger in between counts the calls once.
The settle is sent before the callers are answered, so the call's next request finds its
reservation gone, but they do not wait for its reply: a call's only wait here is its commit.

On PostgreSQL the committer talks to the database from the event loop itself (psycopg's async
connection): handing each batch to a thread cost more latency than the commit. Other databases
(the embedded SQLite) get a thread of their own.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import Awaitable
from concurrent.futures import ThreadPoolExecutor

import orjson
import psycopg
from django.db import close_old_connections, connection

from analytics.ledger import POSITION_SQL, commit_in_turn
from billing.counters import CounterStore
from billing.reservations import Settlement, settle

logger = logging.getLogger(__name__)

MAX_BATCH = 256
COMMIT_RETRIES = 5
# Batches committing at once (on PostgreSQL each has its own connection): while one waits on
# the database, the next settles and commits, so the worker never idles behind one commit.
COMMITTERS = 2


class LogWriter:
    """``store``: where the calls' reservations live; each batch settles them after its commit."""

    def __init__(self, store: CounterStore | None = None) -> None:
        self._store = store
        self._queue: asyncio.Queue[tuple[dict, Settlement | None, asyncio.Future]] | None = None
        self._committers: list[asyncio.Task] = []
        self._busy = 0
        # Settles whose replies are awaited apart from their committers (asyncio holds tasks weakly).
        self._settling: set[asyncio.Task] = set()
        # One thread for the databases that have no async driver here (SQLite has one writer).
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="nemo-log")
        self._connections: list[psycopg.AsyncConnection] = []
        self._loop: asyncio.AbstractEventLoop | None = None

    async def write(self, row: dict, settlement: Settlement | None = None) -> None:
        """Settles the call (if given) and commits its row; returns once the row is committed,
        raises if it could not be. Neither is undone if the caller is cancelled meanwhile: that
        cancels only ``done``, which the committer then leaves alone."""
        if not self._committers or any(task.done() for task in self._committers):
            self._start()
        done = self._loop.create_future()
        self._queue.put_nowait((row, settlement, done))
        await done

    def _start(self) -> None:
        for task in self._committers:
            task.cancel()
        waiting, self._queue = self._queue, asyncio.Queue()
        while waiting is not None and not waiting.empty():
            self._queue.put_nowait(waiting.get_nowait())
        loop = self._loop = asyncio.get_running_loop()
        self._committers = [loop.create_task(self._run()) for _ in range(COMMITTERS)]

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        database = _OwnConnection(self._connections)
        while True:
            batch = [await self._queue.get()]
            self._busy += 1
            try:
                # Let requests finishing in the same tick join this batch.
                await asyncio.sleep(0)
                while len(batch) < MAX_BATCH and not self._queue.empty():
                    batch.append(self._queue.get_nowait())
                position, error = await self._commit([row for row, _, _ in batch], database, loop)
                # A batch that could not be committed is settled all the same: its calls ran.
                settlements = [s for _, s, _ in batch if s is not None]
                settling = self._start_settle(settlements, position)
                for _, _, done in batch:
                    if done.done():
                        continue
                    if error is None:
                        done.set_result(None)
                    else:
                        done.set_exception(error)
                if settling is not None:
                    # The committer goes on to the next batch meanwhile.
                    reply = loop.create_task(self._settle(settling, len(settlements)))
                    self._settling.add(reply)
                    reply.add_done_callback(self._settling.discard)
            finally:
                self._busy -= 1

    def _start_settle(self, settlements: list[Settlement], position: int | None) -> Awaitable[None] | None:
        """Sends the batch's settle (its Redis call is written here, before the callers are
        answered); its reply is awaited in a task of its own."""
        if not settlements:
            return None
        try:
            return settle(self._store, settlements, position)
        except Exception:  # noqa: BLE001 - the rows are in; Redis's mirror is rebuilt from them
            logger.exception("settling %d calls failed; their log rows are written all the same", len(settlements))
            return None

    async def _settle(self, settling: Awaitable[None], count: int) -> None:
        """The rows carry the costs: the request log is the ledger, so they are written even if
        settling failed (Redis gone: its mirror is rebuilt from the rows)."""
        try:
            await settling
        except Exception:  # noqa: BLE001 - the rows still go in
            logger.exception("settling %d calls failed; their log rows are written all the same", count)

    async def _commit(
        self, rows: list[dict], database: _OwnConnection, loop
    ) -> tuple[int | None, BaseException | None]:
        """The commit's position (analytics.ledger), or the error that stopped it."""
        error: BaseException | None = None
        for attempt in range(COMMIT_RETRIES):
            try:
                return await self._insert(rows, database, loop), None
            except Exception as exc:  # noqa: BLE001 - any database error: retry, then report
                error = exc
                logger.warning("request log commit failed (attempt %d): %s", attempt + 1, exc)
                await asyncio.sleep(0.05 * 2**attempt)
        return None, error

    async def _insert(self, rows: list[dict], database: _OwnConnection, loop: asyncio.AbstractEventLoop) -> int:
        """Commits the rows and returns the commit's position."""
        if connection.vendor != "postgresql":
            return await loop.run_in_executor(self._executor, _commit, rows)
        postgres = await database.get()
        try:
            async with postgres.cursor() as cursor:
                if len(rows) == 1:
                    # One statement in autocommit: one round trip, one transaction, whose id comes
                    # back with it.
                    await cursor.execute(_insert_returning_position_sql(), _postgres_values(rows[0]))
                else:
                    # One prepared INSERT per row, pipelined: the statements up to the pipeline's
                    # sync are one implicit transaction, so still one round trip and one commit
                    # (a multi-row VALUES cost 3x the CPU at 10 rows; COPY cannot tell its
                    # transaction's id without a round trip of its own).
                    async with postgres.pipeline():
                        await cursor.executemany(_insert_sql(1), [_postgres_values(row) for row in rows])
                        await cursor.execute(f"SELECT {POSITION_SQL}")
                return int((await cursor.fetchone())[0])
        except psycopg.OperationalError:
            # The connection broke: the next attempt opens a new one.
            await postgres.close()
            raise

    async def close(self) -> None:
        """Commits what was handed over, then stops."""
        while self._queue is not None and (not self._queue.empty() or self._busy):
            await asyncio.sleep(0.01)
        await asyncio.gather(*self._settling)
        for task in self._committers:
            task.cancel()
        for task in self._committers:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for opened in self._connections:
            await opened.close()
        await asyncio.get_running_loop().run_in_executor(self._executor, _close_connection)
        self._executor.shutdown(wait=True)


class _OwnConnection:
    """A committer's own PostgreSQL connection: opened when first needed, and again once it broke.
    ``opened`` keeps every connection the writer opened, for it to close."""

    def __init__(self, opened: list[psycopg.AsyncConnection]) -> None:
        self._opened = opened
        self._current: psycopg.AsyncConnection | None = None

    async def get(self) -> psycopg.AsyncConnection:
        if self._current is None or self._current.closed:
            self._current = await psycopg.AsyncConnection.connect(**_connection_params(), autocommit=True)
            self._opened.append(self._current)
        return self._current


def _connection_params() -> dict:
    """Django's database settings as psycopg connection parameters."""
    settings_dict = connection.settings_dict
    params = {
        "dbname": settings_dict["NAME"],
        "user": settings_dict["USER"] or None,
        "password": settings_dict["PASSWORD"] or None,
        "host": settings_dict["HOST"] or None,
        "port": settings_dict["PORT"] or None,
        **{k: v for k, v in settings_dict.get("OPTIONS", {}).items() if k not in ("pool", "server_side_binding")},
    }
    return {k: v for k, v in params.items() if v is not None}


def _close_connection() -> None:
    connection.close()


@functools.cache
def _insert_fields() -> tuple:
    """The columns the gateway writes: all but the id and those the database fills in."""
    from analytics.models import RequestLog

    return tuple(
        field for field in RequestLog._meta.concrete_fields if not field.primary_key and not field.has_db_default()
    )


@functools.cache
def _postgres_columns() -> tuple:
    """(attribute, is JSON, field) of each column the gateway writes, in the INSERT's order."""
    from django.db.models import JSONField

    return tuple((f.attname, isinstance(f, JSONField), f) for f in _insert_fields())


def _postgres_values(row: dict) -> list:
    """A row's values as psycopg adapts them: the gateway's values are already of the columns'
    types (int, str, bool, Decimal, aware datetime). JSON goes as its text, which PostgreSQL
    reads into the jsonb column as it would any literal (psycopg sends str untyped)."""
    values = []
    for name, is_json, field in _postgres_columns():
        # _row_value, inlined: this runs for every column of every row.
        value = row[name] if name in row else field.get_default()
        if is_json and value is not None:
            value = orjson.dumps(value).decode()
        values.append(value)
    return values


def _params(rows: list[dict]) -> list:
    fields = _insert_fields()
    return [field.get_db_prep_save(_row_value(row, field), connection) for row in rows for field in fields]


def _row_value(row: dict, field):
    """A row's value of a column, or the column's default when the row leaves it out."""
    return row[field.attname] if field.attname in row else field.get_default()


def _commit(rows: list[dict]) -> int:
    """One multi-row INSERT for the batch, in autocommit: a single statement is its own
    transaction, so the batch costs one round trip and one commit. Rows are plain dicts of the
    log's columns: building model instances and running the ORM's compiler would cost more than
    the rest of the insert. Returns the commit's position (analytics.ledger)."""
    close_old_connections()

    def insert() -> None:
        with connection.cursor() as cursor:
            cursor.execute(_insert_sql(len(rows)), _params(rows))

    return commit_in_turn(insert)


@functools.cache
def _insert_returning_position_sql() -> str:
    return f"{_insert_sql(1)} RETURNING {POSITION_SQL}"


@functools.cache
def _insert_sql(row_count: int) -> str:
    from analytics.models import RequestLog

    quote = connection.ops.quote_name
    fields = _insert_fields()
    one_row = "(" + ", ".join(["%s"] * len(fields)) + ")"
    return (
        f"INSERT INTO {quote(RequestLog._meta.db_table)} ({', '.join(quote(f.column) for f in fields)}) "
        f"VALUES {', '.join([one_row] * row_count)}"
    )
