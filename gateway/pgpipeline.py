"""A lean PostgreSQL client for the recorder: prepared statements in pipeline mode, on the loop.

Every call of the gateway waits for a group commit of its log row. Through psycopg's async cursor
a commit cost the worker ~160 µs of CPU (its generators, a zero-timeout ``poll`` and a reader
added to the loop and removed again at every wait, a timer per wait), and at half load a batch
holds one or two rows: a tenth of the worker's CPU per call, and time in every commit's round
trip. Here the connection is psycopg's, opened by psycopg, but driven through its libpq binding
(``psycopg.pq``) directly: the statements are prepared once, the connection stays in pipeline
mode, its socket stays registered with the loop, and a batch is its statements and a sync queued,
one flush and one future (~80 µs, measured the same way).

Parameters go as text, in the connection's encoding (UTF-8, asked for at connect), typed by the
server from the prepared statement. Statements up to a sync are one implicit transaction: if one
fails, none of them is committed, and the first error is raised as psycopg raises it. A broken
connection fails the batch in flight with ``psycopg.OperationalError``; the owner opens another.
So does a server that stops answering: a batch unanswered after ``EXCHANGE_TIMEOUT_S`` breaks
its connection (an insert of log rows never waits that long on a live server), and connecting
gives up after ``CONNECT_TIMEOUT_S``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import psycopg
from psycopg import pq

Params = Sequence[bytes | None] | None
ExecStatus = pq.ExecStatus

EXCHANGE_TIMEOUT_S = 10.0
CONNECT_TIMEOUT_S = 5


class PipelinedPostgres:
    def __init__(self, connection: psycopg.AsyncConnection) -> None:
        self._connection = connection
        self._pgconn = connection.pgconn
        self._loop = asyncio.get_running_loop()
        self._socket = self._pgconn.socket
        self._waiting: asyncio.Future | None = None
        self._results: list[pq.abc.PGresult] = []
        self._ends_due = 0  # statements of the batch in flight whose results have not ended yet
        self._sent_at = 0.0  # when the batch in flight was sent (the loop's clock)
        # One check of the batch in flight at a time, not a timer per batch: a cancelled timer
        # stays in the loop's heap until it would have fired, and a batch takes a millisecond.
        self._watchdog: asyncio.TimerHandle | None = None
        self.broken: BaseException | None = None
        self._prepared: set[bytes] = set()
        self._pgconn.nonblocking = 1
        self._pgconn.enter_pipeline_mode()
        self._loop.add_reader(self._socket, self._readable)

    @classmethod
    async def connect(cls, params: dict, statements: dict[bytes, str]) -> PipelinedPostgres:
        """Opens a connection in autocommit and prepares ``statements`` (name: SQL with ``$n``)."""
        connection = await psycopg.AsyncConnection.connect(**{"connect_timeout": CONNECT_TIMEOUT_S, **params},
                                                           autocommit=True, client_encoding="utf-8")
        client = cls(connection)
        try:
            for name, sql in statements.items():
                client._pgconn.send_prepare(name, sql.encode())
            await client._exchange(len(statements))
        except BaseException:
            await client.close()
            raise
        client._prepared.update(statements)
        return client

    def prepared(self, name: bytes) -> bool:
        return name in self._prepared

    async def prepare(self, name: bytes, sql: str) -> None:
        """Prepares a statement on this connection: a round trip of its own, outside any batch's
        transaction."""
        try:
            self._pgconn.send_prepare(name, sql.encode())
        except psycopg.Error as exc:
            self._break(exc)
            raise
        await self._exchange(1)
        self._prepared.add(name)

    @property
    def closed(self) -> bool:
        return self.broken is not None or self._connection.closed

    async def execute(self, statements: Sequence[tuple[bytes, Params]]) -> list[pq.abc.PGresult]:
        """Runs prepared statements, as one transaction and one round trip; their results in order."""
        send = self._pgconn.send_query_prepared
        try:
            for name, params in statements:
                send(name, params)
        except psycopg.Error as exc:
            self._break(exc)
            raise
        return await self._exchange(len(statements))

    async def _exchange(self, count: int) -> list[pq.abc.PGresult]:
        if self.broken is not None:
            raise psycopg.OperationalError(str(self.broken))
        if self._waiting is not None:
            raise psycopg.InterfaceError("another batch is in flight on this connection")
        self._pgconn.pipeline_sync()
        self._results = []
        self._ends_due = count
        self._waiting = waiting = self._loop.create_future()
        try:
            if self._pgconn.flush():
                self._loop.add_writer(self._socket, self._writable)
        except psycopg.Error as exc:
            self._break(exc)
        self._sent_at = self._loop.time()
        if self._watchdog is None:
            self._watchdog = self._loop.call_later(EXCHANGE_TIMEOUT_S, self._check_answer)
        try:
            results = await waiting
        except asyncio.CancelledError:
            # The batch's outcome will never be read: nothing else can use this connection.
            self._break(psycopg.OperationalError("a batch was cancelled in flight"))
            raise
        for result in results:
            if result.status == ExecStatus.FATAL_ERROR:
                raise psycopg.errors.error_from_result(result, encoding="utf-8")
        return results

    def _check_answer(self) -> None:
        self._watchdog = None
        if self._waiting is None or self.broken is not None:
            return
        late = self._loop.time() - self._sent_at
        if late >= EXCHANGE_TIMEOUT_S:
            self._break(psycopg.OperationalError(f"the server did not answer in {EXCHANGE_TIMEOUT_S:g} s"))
        else:
            self._watchdog = self._loop.call_later(EXCHANGE_TIMEOUT_S - late, self._check_answer)

    def _writable(self) -> None:
        try:
            if not self._pgconn.flush():
                self._loop.remove_writer(self._socket)
        except psycopg.Error as exc:
            self._break(exc)

    def _readable(self) -> None:
        pgconn = self._pgconn
        try:
            pgconn.consume_input()
        except psycopg.Error as exc:
            self._break(exc)
            return
        while self._waiting is not None and not pgconn.is_busy():
            result = pgconn.get_result()
            if result is None:
                # The end of one statement's results; once all have ended, the sync comes next.
                if self._ends_due == 0:
                    break
                self._ends_due -= 1
            elif result.status == ExecStatus.PIPELINE_SYNC:
                waiting, self._waiting = self._waiting, None
                if not waiting.done():
                    waiting.set_result(self._results)
            else:
                self._results.append(result)

    def _break(self, exc: BaseException) -> None:
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None
        if self.broken is None:
            self.broken = exc if isinstance(exc, psycopg.OperationalError) else psycopg.OperationalError(str(exc))
            self._loop.remove_reader(self._socket)
            self._loop.remove_writer(self._socket)
        waiting, self._waiting = self._waiting, None
        if waiting is not None and not waiting.done():
            waiting.set_exception(self.broken)

    async def close(self) -> None:
        self._break(psycopg.OperationalError("the connection is closed"))
        await self._connection.close()
