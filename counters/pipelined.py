"""A lean Redis client for the hot path: one connection per worker, commands pipelined.

Every call of the gateway costs a few Redis commands. Through redis-py's asyncio client each one
took a connection from the pool, wrote it in a syscall of its own, waited for its reply on an
asyncio stream and went back to the pool: about 0.2 ms of the worker's CPU per command, 30% of a
gateway worker's CPU under load in ``bench/``. Here every command is written to the one
connection as soon as it is issued, and the replies, which Redis sends in the order it received
the commands, are matched to their callers by a FIFO of futures. (Gathering the commands of one
turn of the event loop into one write saved a syscall or two per call but held each command until
the loop's next turn, a millisecond under load.) Encoding and parsing are hiredis's
(``pack_command`` and ``Reader``), the same parser redis-py uses.

The connection is opened on first use and again after it is lost: the calls in flight when it
breaks fail with ``ConnectionError``, later calls reconnect. A server that stops answering (a
frozen process, a network gone quiet) is a lost connection too: replies come in order, so once
the oldest waits longer than ``REPLY_TIMEOUT_S`` the connection is closed and every caller on
it fails, rather than waiting forever; connecting gives up after ``CONNECT_TIMEOUT_S``. Only
what the counter store needs is here: commands, scripts by SHA with a fallback to the source,
and MULTI/EXEC batches. Pub/sub stays on redis-py (``gateway/state.py``).
"""

from __future__ import annotations

import asyncio
import collections
import hashlib
import ssl
import time
from collections.abc import Awaitable, Sequence

import hiredis
from redis.connection import parse_url

Arg = str | bytes | int | float

# Every command here is a key lookup or a short script: a reply this late means the server or
# the network is gone.
REPLY_TIMEOUT_S = 5.0
CONNECT_TIMEOUT_S = 3.0


class RedisReplyError(Exception):
    """Redis answered a command with an error reply (``-ERR …``, ``-NOSCRIPT …``)."""


class Script:
    """A Lua script called by SHA; Redis is sent the source once after a restart or flush."""

    __slots__ = ("source", "sha")

    def __init__(self, source: str) -> None:
        self.source = source
        self.sha = hashlib.sha1(source.encode()).hexdigest()


class _Waiter:
    """A caller waiting for ``count`` replies; one reply is passed on bare, several as a list."""

    __slots__ = ("future", "count", "replies", "sent")

    def __init__(self, future: asyncio.Future, count: int) -> None:
        self.future = future
        self.count = count
        self.replies: list = []
        self.sent = time.monotonic()


class _Protocol(asyncio.Protocol):
    def __init__(self, client: PipelinedRedis) -> None:
        self.client = client
        self.reader = hiredis.Reader(replyError=RedisReplyError)
        self.waiters: collections.deque[_Waiter] = collections.deque()
        self.transport: asyncio.Transport | None = None
        self.closed = asyncio.get_running_loop().create_future()
        self.watchdog: asyncio.TimerHandle | None = None
        self.timed_out = False

    def connection_made(self, transport) -> None:
        self.transport = transport

    def watch(self) -> None:
        """Arms the check of the oldest reply, unless it is armed."""
        if self.watchdog is None:
            self.watchdog = asyncio.get_running_loop().call_later(REPLY_TIMEOUT_S, self._check_replies)

    def _check_replies(self) -> None:
        self.watchdog = None
        if not self.waiters:
            return
        late = time.monotonic() - self.waiters[0].sent
        if late < REPLY_TIMEOUT_S:
            self.watchdog = asyncio.get_running_loop().call_later(REPLY_TIMEOUT_S - late, self._check_replies)
            return
        self.timed_out = True
        self.transport.abort()

    def data_received(self, data: bytes) -> None:
        self.reader.feed(data)
        waiters = self.waiters
        while (reply := self.reader.gets()) is not False:
            waiter = waiters[0]
            waiter.replies.append(reply)
            if len(waiter.replies) < waiter.count:
                continue
            waiters.popleft()
            if not waiter.future.done():  # a caller that was cancelled gets nothing
                waiter.future.set_result(waiter.replies[0] if waiter.count == 1 else waiter.replies)

    def connection_lost(self, exc: Exception | None) -> None:
        self.client._lost(self)
        if self.watchdog is not None:
            self.watchdog.cancel()
        why = f"no reply in {REPLY_TIMEOUT_S:g} s" if self.timed_out else exc or "closed by the server"
        error = ConnectionError(f"Redis connection lost: {why}")
        while self.waiters:
            future = self.waiters.popleft().future
            if not future.done():
                future.set_exception(error)
        if not self.closed.done():
            self.closed.set_result(None)


class PipelinedRedis:
    """``await client.execute("GET", key)``; ``await client.batch([...])`` for several at once."""

    def __init__(self, url: str) -> None:
        options = parse_url(url)
        self._path: str | None = options.get("path")
        self._host = options.get("host", "localhost")
        self._port = int(options.get("port", 6379))
        self._tls = url.startswith("rediss://")
        self._setup: list[tuple[Arg, ...]] = []
        if options.get("password") is not None:
            username = options.get("username")
            self._setup.append(("AUTH", username, options["password"]) if username else ("AUTH", options["password"]))
        if int(options.get("db", 0)):
            self._setup.append(("SELECT", int(options["db"])))
        self._protocol: _Protocol | None = None
        self._connecting: asyncio.Future | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    # -- connection --------------------------------------------------------------------------

    async def _connection(self) -> _Protocol:
        if self._protocol is not None:
            return self._protocol
        if self._connecting is None:
            self._connecting = asyncio.ensure_future(self._connect())
        connecting = self._connecting
        try:
            return await asyncio.shield(connecting)
        finally:
            if self._connecting is connecting and connecting.done():
                self._connecting = None

    async def _connect(self) -> _Protocol:
        loop = self._loop = asyncio.get_running_loop()
        if self._path:
            opening = loop.create_unix_connection(lambda: _Protocol(self), self._path)
        else:
            context = ssl.create_default_context() if self._tls else None
            opening = loop.create_connection(lambda: _Protocol(self), self._host, self._port, ssl=context)
        _, protocol = await asyncio.wait_for(opening, CONNECT_TIMEOUT_S)
        try:
            for command in self._setup:
                await self._send(protocol, [hiredis.pack_command(command)])
        except BaseException:
            protocol.transport.close()
            raise
        self._protocol = protocol
        return protocol

    def _lost(self, protocol: _Protocol) -> None:
        if self._protocol is protocol:
            self._protocol = None

    # -- sending -----------------------------------------------------------------------------

    def _send(self, protocol: _Protocol, packed: list[bytes]) -> asyncio.Future:
        """Writes the commands at once; the future gets their replies."""
        if protocol.transport.is_closing():  # lost, and not yet told: as for the calls in flight
            raise ConnectionError("Redis connection lost: closing")
        future = self._loop.create_future()
        protocol.waiters.append(_Waiter(future, len(packed)))
        protocol.watch()
        protocol.transport.write(packed[0] if len(packed) == 1 else b"".join(packed))
        return future

    async def _replies(self, packed: list[bytes]):
        # Connected (the usual case): no extra coroutine between the caller and its future.
        protocol = self._protocol or await self._connection()
        return await self._send(protocol, packed)

    # -- commands ----------------------------------------------------------------------------

    @property
    def connected(self) -> bool:
        return self._protocol is not None

    async def execute(self, *command: Arg):
        reply = await self._replies([hiredis.pack_command(command)])
        if isinstance(reply, RedisReplyError):
            raise reply
        return reply

    async def asking(self, command: Sequence[Arg]):
        """One command of a slot being migrated to this node (a Redis Cluster's ``ASK``)."""
        replies = await self._replies([hiredis.pack_command(("ASKING",)), hiredis.pack_command(tuple(command))])
        if isinstance(replies[-1], RedisReplyError):
            raise replies[-1]
        return replies[-1]

    async def batch(self, commands: Sequence[Sequence[Arg]]) -> list:
        """Several commands written together; their replies in order (an error reply as its
        exception object, not raised, as redis-py's ``raise_on_error=False``)."""
        if not commands:
            return []
        replies = await self._replies([hiredis.pack_command(tuple(command)) for command in commands])
        return replies if len(commands) > 1 else [replies]

    async def scatter(self, commands: Sequence[Sequence[Arg]]) -> list:
        """Several commands of any keys written together; their replies in order, an error raised
        (on a cluster, ``ClusterPipelinedRedis.scatter`` sends each to its own node)."""
        replies = await self.batch(commands)
        for reply in replies:
            if isinstance(reply, RedisReplyError):
                raise reply
        return replies

    async def transaction(self, commands: Sequence[Sequence[Arg]], *, asking: bool = False) -> list:
        """The commands in one MULTI/EXEC: Redis runs them with nothing in between."""
        replies = await self.batch([*((("ASKING",),) if asking else ()), ("MULTI",), *commands, ("EXEC",)])
        for reply in replies:
            if isinstance(reply, RedisReplyError):
                raise reply
        return replies[-1]

    def evalsha(self, script: Script, keys: Sequence[Arg], args: Sequence[Arg], *, asking: bool = False) -> Awaitable:
        """One script call, the hot path's. When connected, the command is written before this
        returns rather than when the caller's task first runs, so a caller can start a call,
        do something else and await it later: a task started for it would first wait a turn of
        the event loop, a millisecond under load. ``asking``: after ``ASKING`` (cluster.py)."""
        if asking:
            return self._asked_script(script, keys, args)
        packed = [hiredis.pack_command(("EVALSHA", script.sha, len(keys), *keys, *args))]
        sent = self._send(self._protocol, packed) if self._protocol is not None else None
        return self._script_reply(sent, packed, script, keys, args)

    async def _script_reply(self, sent: asyncio.Future | None, packed: list[bytes], script: Script,
                            keys: Sequence[Arg], args: Sequence[Arg]):
        reply = await (sent if sent is not None else self._replies(packed))
        if isinstance(reply, RedisReplyError):
            if not str(reply).startswith("NOSCRIPT"):
                raise reply
            reply = await self.execute("EVAL", script.source, len(keys), *keys, *args)
        return reply

    async def _asked_script(self, script: Script, keys: Sequence[Arg], args: Sequence[Arg]):
        try:
            return await self.asking(("EVALSHA", script.sha, len(keys), *keys, *args))
        except RedisReplyError as error:
            if not str(error).startswith("NOSCRIPT"):
                raise
            return await self.asking(("EVAL", script.source, len(keys), *keys, *args))

    async def nodes(self) -> list[PipelinedRedis]:
        """The one node (``ClusterPipelinedRedis.nodes`` gives a cluster's primaries)."""
        return [self]

    async def close(self) -> None:
        protocol, self._protocol = self._protocol, None
        if protocol is not None and protocol.transport is not None:
            protocol.transport.close()
            await protocol.closed
