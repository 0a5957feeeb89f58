"""The pipeline's last step, ``record``: the request-log row, durable before the call counts as done,
then the call's reservation settled.

One INSERT per request would cost more than the rest of the hot path (DESIGN.md), so rows are
written in group commits: every request hands its row to one committer and waits for the commit
of the small batch it landed in. While one batch commits, the next one gathers. Each batch costs
one round trip and is one transaction.

The committer also settles the batch's reservations, in one Redis call, once the rows are
committed: the rows are the ledger, and the settle tells the counter store which commit wrote
them (analytics.ledger), so a counter rebuilt from the ledger in between counts the calls once.
The settle is sent before the callers are answered, so the call's next request finds its
reservation gone, but they do not wait for its reply: a call's only wait here is its commit.

On PostgreSQL the committer talks to the database from the event loop itself, through prepared
statements in pipeline mode (gateway/pgpipeline.py): handing each batch to a thread cost more
latency than the commit, and psycopg's async cursor twice the CPU. Other databases (the embedded
SQLite) get a thread of their own.

Every call is logged, whatever its client or upstream sent: values are fitted to their columns
(gateway/log_rows.py), and a row the database refuses all the same is committed apart from the rest of its
batch, so it fails its own call only. A connection lost in a commit is tried again on another,
after looking up which of the rows the lost commit wrote all the same (its reply is what was
lost): those are answered, and settled with that commit's position, not written twice.

The database may be gone for a while (a restart, a failover). Rows handed over then are never
dropped: their commit is tried again, further and further apart, until the database answers,
and their callers wait for it. Meanwhile the recorder says it is not ``available``, and the
gateway refuses new calls before they reach an upstream (a 503): nothing is served that could
not be logged. Once a commit or a probe of the database succeeds, it is available again. A
settle whose reply was lost (Redis gone) is sent again once Redis answers, as a retry that
charges nothing for a reservation it no longer finds (the first may have taken).

This module is longer than most (over 400 lines) because the committers, the waiting out of a
lost database and the settles share one queue and one rule of order — commit, then settle, then
answer — which is easier to check in one place. How a row becomes SQL is gateway/log_rows.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor

import django.db
import orjson
import psycopg
from django.db import connection

from analytics.ledger import DATABASE_ERRORS, row_position
from billing.reservations import STORE_ERRORS, Settlement, settle
from counters import CounterStore
from gateway import db, log_rows, metrics
from gateway.pgpipeline import PipelinedPostgres

logger = logging.getLogger(__name__)

MAX_BATCH = 256
# A commit that fails for another reason than a lost database (a bug) is tried this many times.
COMMIT_RETRIES = 5
# A commit that failed because the database was lost is tried again after these many seconds,
# doubling up to the last, for as long as it takes.
RETRY_FIRST_S = 0.05
RETRY_MAX_S = 1.0
# Rows of calls nobody waits for (refused while the database is away, see ``submit``) kept at
# most, so a long outage cannot eat the worker's memory.
MAX_UNAWAITED = 20_000
# How long ``close`` waits for the database to take the rows handed over.
CLOSE_WAIT_S = 20.0
# Batches committing at once (on PostgreSQL each has its own connection): while one waits on
# the database, the next settles and commits, so the worker never idles behind one commit.
COMMITTERS = 2
# What the database says of rows it will never take, however often they are sent (a lost
# connection or a lock is tried again).
REFUSED = (psycopg.DataError, psycopg.IntegrityError, django.db.DataError, django.db.IntegrityError)
# The database is gone (its connection broke, it refuses connections, it is starting or stopping).
LOST = (*DATABASE_ERRORS, OSError)


class Recorder:
    """``store``: where the calls' reservations live; each batch settles them after its commit.
    ``poke``: told of every row handed over (gateway/busypoll.py: the commit's reply is awaited
    polling)."""

    def __init__(self, store: CounterStore | None = None, *, poke: Callable[[], None] = lambda: None) -> None:
        self._store = store
        self._poke = poke
        self._queue: asyncio.Queue[tuple[dict, Settlement | None, asyncio.Future | None]] | None = None
        self._committers: list[asyncio.Task] = []
        self._busy = 0
        # Settles whose replies are awaited apart from their committers (asyncio holds tasks weakly).
        self._settling: set[asyncio.Task] = set()
        # Settles whose reply was lost, with their commits' positions, to send again once Redis
        # answers (``_resettle``).
        self._unsettled: list[tuple[list[Settlement], int | None]] = []
        self._resettling: asyncio.Task | None = None
        # One thread for the databases that have no async driver here (SQLite has one writer).
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="nemo-recorder")
        self._connections: list[PipelinedPostgres] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        # Read once: ``connection.vendor`` goes through three ``__getattr__`` proxies (Django's
        # and asgiref's), each a formatted AttributeError, at every batch.
        self._on_postgres = connection.vendor == "postgresql"
        # Since when the database has been lost (None: it answers), and what was last seen of it.
        self._lost_since: float | None = None
        self._probing: asyncio.Task | None = None
        self._unawaited = 0
        self.dropped = 0

    @property
    def available(self) -> bool:
        """Whether the database takes rows: when it does not, no call should reach an upstream."""
        return self._lost_since is None

    async def record(self, row: dict, settlement: Settlement | None = None) -> None:
        """Commits the call's row, then settles its reservation (if given) at the commit's
        position; returns once the row is committed, raises if it could not be (the database
        refused it). A lost database is waited for.
        Neither is undone if the caller is cancelled meanwhile: that cancels only ``done``, which
        the committer then leaves alone."""
        self._ensure_started()
        done = self._loop.create_future()
        self._queue.put_nowait((row, settlement, done))
        self._poke()
        await done

    def submit(self, row: dict) -> None:
        """Hands over the row of a call that settles nothing (refused before any upstream),
        without waiting for its commit: while the database is away, such rows wait in memory,
        up to ``MAX_UNAWAITED`` (more are counted in ``dropped`` and logged)."""
        self._ensure_started()
        if self._unawaited >= MAX_UNAWAITED:
            self.dropped += 1
            logger.error("request log row %s dropped: %d rows already wait for the database",
                         row.get("request_id"), self._unawaited)
            return
        self._unawaited += 1
        self._queue.put_nowait((row, None, None))

    def _ensure_started(self) -> None:
        if not self._committers or any(task.done() for task in self._committers):
            self._start()

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
            taken = time.monotonic()
            self._busy += 1
            try:
                # Let requests finishing in the same tick join this batch.
                await asyncio.sleep(0)
                while len(batch) < MAX_BATCH and not self._queue.empty():
                    batch.append(self._queue.get_nowait())
                parts = await self._commit_batch(batch, database, loop)
                metrics.observe_commit(len(batch), time.monotonic() - taken)
                for part, position, error in parts:
                    self._answer(part, position, error, loop)
            finally:
                self._busy -= 1

    def _lost(self, error: BaseException) -> None:
        """The database is gone: calls are refused until a commit or a probe succeeds."""
        if self._lost_since is None:
            self._lost_since = time.monotonic()
            logger.error("the request log's database is unreachable (%s): new calls are refused until it answers",
                         error)
        if self._probing is None or self._probing.done():
            self._probing = asyncio.get_running_loop().create_task(self._probe())

    def _found(self) -> None:
        if self._lost_since is not None:
            logger.warning("the request log's database answers again after %.1f s",
                           time.monotonic() - self._lost_since)
            self._lost_since = None

    async def _probe(self) -> None:
        """While the database is lost, and no commit is being tried that would tell, asks it
        whether it is back (a call refused meanwhile would otherwise wait for the next commit)."""
        database = _OwnConnection(self._connections)
        delay = RETRY_FIRST_S
        try:
            while self._lost_since is not None:
                await asyncio.sleep(delay)
                delay = min(delay * 2, RETRY_MAX_S)
                try:
                    await self._ping(database)
                except LOST:
                    continue
                self._found()
        finally:
            await database.close()

    async def _ping(self, database: _OwnConnection) -> None:
        if not self._on_postgres:
            await asyncio.get_running_loop().run_in_executor(self._executor, db.ping)
            return
        postgres = await database.get()
        await postgres.execute([(log_rows.PING, None)])

    def _answer(self, part: list, position: int | None, error: BaseException | None, loop) -> None:
        """Settles the calls of a commit (one that failed too: its calls ran) and answers them."""
        settlements = [s for _, s, _ in part if s is not None]
        settling = self._start_settle(settlements, position)
        for row, _, done in part:
            if done is None:
                self._unawaited -= 1
                if error is not None:
                    logger.error("request log row %s could not be written: %s", row.get("request_id"), error)
            elif done.done():
                continue
            elif error is None:
                done.set_result(None)
            else:
                done.set_exception(error)
        if settling is not None:
            # The committer goes on to the next batch meanwhile.
            reply = loop.create_task(self._settle(settling, settlements, position))
            self._settling.add(reply)
            reply.add_done_callback(self._settling.discard)

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

    async def _settle(self, settling: Awaitable[list[bool]], settlements: list[Settlement],
                      position: int | None) -> None:
        """The rows carry the costs: the request log is the ledger, so they are written even if
        settling failed. A settle whose reply was lost with Redis is sent again once it answers."""
        try:
            await settling
        except STORE_ERRORS as error:
            logger.warning("settling %d calls lost its reply (%s); it is sent again once Redis answers",
                           len(settlements), error)
            self._unsettled.append((settlements, position))
            if self._resettling is None or self._resettling.done():
                self._resettling = asyncio.get_running_loop().create_task(self._resettle())
        except Exception:  # noqa: BLE001 - the rows are in; Redis's mirror is rebuilt from them
            logger.exception("settling %d calls failed; their log rows are written all the same", len(settlements))

    async def _resettle(self) -> None:
        """Settles again the calls whose settle's reply was lost: a reservation still there is
        settled, one already settled (or lost with Redis, whose counters the ledger rebuilds)
        charges nothing."""
        delay = RETRY_FIRST_S
        while self._unsettled:
            await asyncio.sleep(delay)
            settlements, position = self._unsettled[0]
            try:
                await settle(self._store, settlements, position, charge_missing=False)
            except STORE_ERRORS:
                delay = min(delay * 2, RETRY_MAX_S)
                continue
            self._unsettled.pop(0)

    async def _commit_batch(self, batch: list, database: _OwnConnection, loop) -> list[tuple]:
        """(entries, position, error) of each commit the batch took: one, unless a commit whose
        reply was lost had taken part of it, or the database refused a row, which then must not
        fail the calls it shared the batch with: each row is committed alone."""
        parts = []
        for part, position, error in await self._commit(batch, database, loop):
            if error is None or len(part) == 1 or not isinstance(error, REFUSED):
                parts.append((part, position, error))
                continue
            logger.warning("the database refused a batch of %d log rows (%s); committing them one by one",
                           len(part), error)
            for entry in part:
                parts += await self._commit([entry], database, loop)
        return parts

    async def _commit(self, entries: list, database: _OwnConnection, loop) -> list[tuple]:
        """(entries, position, error) of the commits that took these entries (analytics.ledger),
        or the error that stopped them. A lost connection is tried again; rows the database
        refuses are not. A connection lost while committing may have lost only the commit's
        reply: before trying again, the rows already in the log are looked up, and are answered
        with the position of the commit that wrote them rather than written twice."""
        error: BaseException | None = None
        committed: list[tuple] = []
        failures = 0
        delay = RETRY_FIRST_S
        while True:
            try:
                if error is not None:
                    landed, entries = await self._landed(entries, database, loop, log_rows.LANDED)
                    committed += landed
                    if not entries:
                        self._found()
                        return committed
                position = await self._insert([row for row, _, _ in entries], database, loop)
                self._found()
                return [*committed, (entries, position, None)]
            except REFUSED as exc:
                self._found()
                if isinstance(exc, psycopg.errors.UniqueViolation):
                    # The row of a call whose worker was taken for dead may be in already: the
                    # reaper wrote it (analytics.reaper), and it stands; those calls are answered.
                    reaped, entries = await self._landed(entries, database, loop, log_rows.REAPED)
                    committed += reaped
                    if reaped:
                        if not entries:
                            return committed
                        continue
                logger.error("the database refused %d log rows: %s", len(entries), exc)
                return [*committed, (entries, None, exc)]
            except LOST as exc:
                # The rows wait for the database, however long it is away: they are the trail
                # of calls that ran, and their callers wait for them.
                error = exc
                self._lost(exc)
                logger.warning("request log commit of %d rows failed, the database is unreachable (%s); "
                               "trying again in %.2f s", len(entries), exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, RETRY_MAX_S)
            except Exception as exc:  # noqa: BLE001 - any other database error: retry, then report
                error = exc
                failures += 1
                logger.warning("request log commit failed (attempt %d): %s", failures, exc)
                if failures == COMMIT_RETRIES:
                    return [*committed, (entries, None, error)]
                await asyncio.sleep(RETRY_FIRST_S * 2**failures)

    async def _landed(self, entries: list, database: _OwnConnection, loop, lookup: bytes) -> tuple[list[tuple], list]:
        """Of entries whose commit failed, ([(entries, position, None)] of those whose row is in
        the log all the same, the others): ``log_rows.LANDED``, rows a commit whose reply was lost wrote;
        ``log_rows.REAPED``, rows the reaper wrote. Only PostgreSQL can lose a commit's reply, and only it
        has a reaper: SQLite commits here."""
        if not self._on_postgres:
            return [], entries
        postgres = await database.get()
        rows = [row for row, _, _ in entries]
        ids = [row["request_id"] for row in rows]
        (result,) = await postgres.execute([(lookup, [log_rows.text_array(ids), *log_rows.created_bounds(rows)])])
        positions = {
            result.get_value(n, 0).decode(): row_position(int(result.get_value(n, 1)), int(result.get_value(n, 2)))
            for n in range(result.ntuples)
        }
        if not positions:
            return [], entries
        logger.warning("%d of %d log rows were in the log already: %s", len(positions), len(entries),
                       "their commit's reply was lost" if lookup == log_rows.LANDED else "the reaper wrote them")
        by_position: dict[int, list] = {}
        for entry in entries:
            if entry[0]["request_id"] in positions:
                by_position.setdefault(positions[entry[0]["request_id"]], []).append(entry)
        landed = [(part, position, None) for position, part in by_position.items()]
        return landed, [entry for entry in entries if entry[0]["request_id"] not in positions]

    async def _insert(self, rows: list[dict], database: _OwnConnection, loop: asyncio.AbstractEventLoop) -> int:
        """Commits the rows and returns the commit's position."""
        if not self._on_postgres:
            return await loop.run_in_executor(self._executor, log_rows.commit_rows, rows)
        postgres = await database.get()
        if len(rows) == 1:
            # One statement: one transaction, whose id comes back with it.
            results = await postgres.execute([(log_rows.INSERT_RETURNING_POSITION, log_rows.postgres_params(rows[0]))])
        else:
            # Multi-row INSERTs (log_rows.inserts_of) and the transaction's id, before one sync:
            # one implicit transaction and one round trip (COPY cannot tell its transaction's id
            # without a round trip of its own). A size's statement is prepared the first time.
            inserts = log_rows.inserts_of(rows)
            for name, sql, _ in inserts:
                if not postgres.prepared(name):
                    await postgres.prepare(name, sql)
            statements = [(name, params) for name, _, params in inserts]
            results = await postgres.execute([*statements, (log_rows.POSITION, None)])
        return int(results[-1].get_value(0, 0))

    async def close(self) -> None:
        """Commits what was handed over, then stops. Rows the database still has not taken after
        ``CLOSE_WAIT_S`` (it is away) are logged whole at ERROR, so that none is lost unseen."""
        give_up = time.monotonic() + CLOSE_WAIT_S
        while self._queue is not None and (not self._queue.empty() or self._busy) and time.monotonic() < give_up:
            await asyncio.sleep(0.01)
        await asyncio.gather(*self._settling)
        for task in [*self._committers, self._probing, self._resettling]:
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        while self._queue is not None and not self._queue.empty():
            row, _, _ = self._queue.get_nowait()
            logger.error("request log row never written (the database was unreachable): %s",
                         orjson.dumps(row, default=str).decode())
        for opened in self._connections:
            await opened.close()
        await asyncio.get_running_loop().run_in_executor(self._executor, _close_connection)
        self._executor.shutdown(wait=True)


class _OwnConnection:
    """A committer's own PostgreSQL connection: opened when first needed, and again once it broke.
    ``opened`` keeps every connection the recorder opened, for it to close."""

    def __init__(self, opened: list[PipelinedPostgres]) -> None:
        self._opened = opened
        self._current: PipelinedPostgres | None = None

    async def get(self) -> PipelinedPostgres:
        if self._current is None or self._current.closed:
            # Forgotten before reconnecting: if the database is still away, the next get()
            # tries again from a clean slate.
            await self.close()
            self._current = await PipelinedPostgres.connect(log_rows.connection_params(), log_rows.statements())
            self._opened.append(self._current)
        return self._current

    async def close(self) -> None:
        broken, self._current = self._current, None
        if broken is not None:
            if broken in self._opened:
                self._opened.remove(broken)
            await broken.close()


def _close_connection() -> None:
    connection.close()


