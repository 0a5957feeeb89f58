"""The pipelined client of ``pipelined.py``, for a Redis Cluster (or Valkey, or a managed cluster):
one pipelined connection per node, each command sent to the node that serves its key's slot.

The slot map comes from ``CLUSTER SLOTS``, asked of any node known (the seeds of the URL first),
on first use, after a ``MOVED`` and after a lost connection (a node that died is replaced by its
replica: the map then says so). ``MOVED`` (a slot that moved for good) is retried on the node it
names; ``ASK`` (a slot migrating) is retried there once, after ``ASKING``, as the protocol says;
``TRYAGAIN`` and ``CLUSTERDOWN`` (a failover under way) are retried after a short wait. A call
whose node cannot be reached fails with ``ConnectionError``, as with one Redis: the counter store's
callers wait out short outages (billing.reservations).

Every command of the counter store names its keys (scripts get every key in ``KEYS``, all in one
slot: counters/redis.py), so a command is routed by its first key. The URL::

    redis+cluster://[user:password@]host:port[,host:port...]     (rediss+cluster:// for TLS)
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable, Sequence
from urllib.parse import urlsplit

from redis.crc import key_slot

from counters.pipelined import Arg, PipelinedRedis, RedisReplyError, Script

CLUSTER_SCHEMES = ("redis+cluster://", "rediss+cluster://")
SLOTS = 16384
# Redirections and retries one command may take: a resharding moves a slot once.
MAX_REDIRECTS = 5
# A failover promotes a replica within the cluster's node timeout; meanwhile a slot answers
# CLUSTERDOWN or TRYAGAIN.
RETRY_WAIT_S = 0.1
_REDIRECTIONS = ("MOVED ", "ASK ", "TRYAGAIN", "CLUSTERDOWN")


def is_cluster_url(url: str | None) -> bool:
    return bool(url) and url.startswith(CLUSTER_SCHEMES)


def pubsub_url(url: str) -> str:
    """A plain URL for pub/sub: a cluster's first seed node (a cluster carries PUBLISH to every
    node), or the URL itself for one Redis."""
    if not is_cluster_url(url):
        return url
    scheme, rest = url.split("+cluster://", 1)
    credentials, _, hosts = rest.rpartition("@")
    first = hosts.split("/", 1)[0].split(",")[0]
    return f"{scheme}://{credentials + '@' if credentials else ''}{first}"


def _slot(key: Arg) -> int:
    return key_slot(key if isinstance(key, bytes) else str(key).encode())


class ClusterPipelinedRedis:
    """The same calls as ``PipelinedRedis`` (``execute``, ``batch``, ``transaction``, ``evalsha``,
    ``close``), routed by slot; ``batch`` and ``transaction`` take commands of one slot.
    ``nodes()`` gives each primary's client (for a scan of every node)."""

    def __init__(self, url: str) -> None:
        if not is_cluster_url(url):
            raise ValueError(f"not a Redis Cluster URL: {url!r}")
        parts = urlsplit(url.replace("+cluster://", "://", 1).split(",", 1)[0])
        self._scheme = "rediss" if url.startswith("rediss") else "redis"
        self._auth = ""
        if parts.password is not None:
            self._auth = f"{parts.username or ''}:{parts.password}@"
        hosts = url.split("://", 1)[1].rpartition("@")[2].split("/", 1)[0]
        self._seeds = [self._address(host) for host in hosts.split(",") if host]
        self._clients: dict[tuple[str, int], PipelinedRedis] = {}
        self._slots: list[tuple[str, int] | None] = [None] * SLOTS
        self._refreshing: asyncio.Task | None = None
        self._mapped = False

    @staticmethod
    def _address(host_port: str) -> tuple[str, int]:
        host, _, port = host_port.rpartition(":")
        return (host or "127.0.0.1").strip("[]"), int(port or 6379)

    def _client(self, address: tuple[str, int]) -> PipelinedRedis:
        client = self._clients.get(address)
        if client is None:
            host, port = address
            client = self._clients[address] = PipelinedRedis(f"{self._scheme}://{self._auth}{host}:{port}")
        return client

    # -- the slot map ------------------------------------------------------------------------

    async def _refresh(self) -> None:
        """Reads the slot map once, however many callers ask for it meanwhile."""
        if self._refreshing is None or self._refreshing.done():
            self._refreshing = asyncio.ensure_future(self._read_slots())
        await asyncio.shield(self._refreshing)

    async def _read_slots(self) -> None:
        known = [*self._seeds, *(a for a in self._clients if a not in self._seeds)]
        failure: Exception | None = None
        for address in sorted(known, key=lambda a: (a not in self._seeds, random.random())):
            try:
                ranges = await self._client(address).execute("CLUSTER", "SLOTS")
            except (OSError, RedisReplyError) as error:  # ConnectionError, TimeoutError too
                failure = error
                continue
            slots: list[tuple[str, int] | None] = [None] * SLOTS
            for start, end, primary, *_replicas in ranges:
                host = primary[0].decode() if primary[0] else address[0]
                target = (host, int(primary[1]))
                self._client(target)
                for slot in range(int(start), int(end) + 1):
                    slots[slot] = target
            self._slots, self._mapped = slots, True
            return
        raise ConnectionError(f"no node of the Redis Cluster answered CLUSTER SLOTS: {failure}")

    async def _node(self, slot: int) -> PipelinedRedis:
        if not self._mapped:
            await self._refresh()
        address = self._slots[slot]
        if address is None:
            await self._refresh()
            address = self._slots[slot]
            if address is None:
                raise ConnectionError(f"no node of the Redis Cluster serves slot {slot}")
        return self._client(address)

    def _known_node(self, slot: int) -> PipelinedRedis | None:
        """The slot's node without waiting, when the map is read (the hot path's case)."""
        address = self._slots[slot]
        return self._clients[address] if address is not None else None

    # -- routing -----------------------------------------------------------------------------

    async def _routed(self, slot: int, first: Awaitable | None,
                      send: Callable[[PipelinedRedis, bool], Awaitable]):
        """The reply of a command sent to the slot's node (``first``: already sent), following
        redirections. ``send(client, asking)`` sends it again (after ``ASKING`` if asking)."""
        pending = first
        for attempt in range(MAX_REDIRECTS):
            if pending is None:
                pending = send(await self._node(slot), False)
            try:
                return await pending
            except RedisReplyError as error:
                if not str(error).startswith(_REDIRECTIONS):
                    raise
                last = error
                if attempt == MAX_REDIRECTS - 1:
                    break
                pending = await self._redirect(error, send)
            except OSError:  # ConnectionError, TimeoutError
                # The node may be gone for good (a failover): read the map again for later calls.
                self._mapped = False
                raise
        # Still moving or failing over: to the caller, as an outage of the store.
        raise ConnectionError(f"Redis Cluster: slot {slot} still unavailable: {last}")

    async def _redirect(self, error: RedisReplyError, send: Callable[[PipelinedRedis, bool], Awaitable]):
        """What to wait for instead of a reply that was a redirection (None: ask the slot's node)."""
        kind, *rest = str(error).split(" ")
        if kind == "MOVED":
            await self._refresh()
            return send(self._client(self._address(rest[1])), False)
        if kind == "ASK":
            return send(self._client(self._address(rest[1])), True)
        # TRYAGAIN, CLUSTERDOWN
        await asyncio.sleep(RETRY_WAIT_S)
        self._mapped = False
        return None

    # -- the client's calls ------------------------------------------------------------------

    async def execute(self, *command: Arg):
        slot = _slot(command[1]) if len(command) > 1 else 0
        return await self._routed(slot, None, lambda client, asking: (
            client.asking(command) if asking else client.execute(*command)))

    async def batch(self, commands: Sequence[Sequence[Arg]]) -> list:
        if not commands:
            return []
        slot = _slot(commands[0][1])
        return await self._routed(slot, None, lambda client, asking: client.batch(
            [("ASKING",), *commands] if asking else commands))

    async def scatter(self, commands: Sequence[Sequence[Arg]]) -> list:
        """Commands of any slots, each sent to its own node at once; their replies in order."""
        return list(await asyncio.gather(*(self.execute(*command) for command in commands)))

    async def transaction(self, commands: Sequence[Sequence[Arg]]) -> list:
        slot = _slot(commands[0][1])
        return await self._routed(slot, None, lambda client, asking: client.transaction(commands, asking=asking))

    def evalsha(self, script: Script, keys: Sequence[Arg], args: Sequence[Arg]) -> Awaitable:
        """Written at once when the slot's node is known and connected, as ``PipelinedRedis``'s."""
        slot = _slot(keys[0]) if keys else 0
        client = self._known_node(slot)
        first = client.evalsha(script, keys, args) if client is not None and client.connected else None
        return self._routed(slot, first, lambda client, asking: client.evalsha(script, keys, args, asking=asking))

    async def nodes(self) -> list[PipelinedRedis]:
        await self._refresh()
        return [self._clients[address] for address in dict.fromkeys(a for a in self._slots if a is not None)]

    async def close(self) -> None:
        clients, self._clients = list(self._clients.values()), {}
        self._slots, self._mapped = [None] * SLOTS, False
        await asyncio.gather(*(client.close() for client in clients))
