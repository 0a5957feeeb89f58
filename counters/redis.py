"""The shared store: every gateway worker on every machine shares one Redis. Each hot-path step
is one Lua script (``lua/``), so it is atomic across workers and costs one round trip.

Redis must evict, if at all, only keys with a TTL (``maxmemory-policy volatile-*``): those are
cache entries, rate windows and seeded counters, each safe to lose; reservations and the epoch
carry no TTL and are never evicted.

Key layout (prefix ``nemo:`` by default). A bucket's or rate key's name may begin with a hash
tag (billing names every counter of an org's calls ``{o<org id>}…``); a reservation's own keys
(``<tag>`` below) take its buckets' tag, and it goes by ``<tag><id>`` inside Redis::

    s:<bucket>            string  settled spend, micro-dollars
    sx:<bucket>           string  the ledger snapshot s:<bucket> was rebuilt at, same TTL
    r:<bucket>            hash    res:<id> -> amount of each outstanding reservation, total -> sum
    pc:<bucket>           list    "position:cost" settled while s:<bucket> was missing, for its rebuild
    run:<bucket>          hash    a run's state (admit.lua): limit (its envelope), steps, loop and
                                  tc:<tool call> (run_tools.lua); lives RUN_STATE_TTL_S past its last call
    res:<tag><id>         string  reservation record (JSON: buckets, rate key, tokens reserved, trail)
    reaped:<tag><id>      string  the reaper settled <id> from its log row (reap_settled), for an hour
    deadlines<tag>        zset    <tag><id> -> deadline, for the reaper
    epoch<tag>            string  the tag's epoch (epoch.lua), no TTL: gone means Redis lost its state
    hold<tag>             string  after a loss, the tag's admissions wait while this lives
    tags                  set     every tag with reservations (the reaper walks their deadlines)
    rl:<key>:req          string  request window (GCRA: when the window is full again)
    rl:<key>:tok          string  token window, same
    rl:<key>:par          set     ids of the key's calls in flight
    cb:<deployment>       hash    circuit breaker: state, until, failures
    cd:<deployment>       string  cooling down until
    lat:<deployment>      string  latency average, ms
    cache:<key>           string  cached response, with its TTL
    idem:<name>           hash    an Idempotency-Key's claim (f) and kept answer (a), with its TTL

Each script's keys share one hash tag, so on a Redis Cluster (a ``redis+cluster://`` URL,
counters/cluster.py) each is one step on the node of the org's slot, and the orgs spread over the
nodes. Settle and reap find a reservation's buckets through its record, and name their keys inside
the script: the same tag, so the same slot. On a cluster each deployment's state (``cb:``,
``cd:``, ``lat:``) is in a slot of its own (``nemo:cb:{d:<deployment>}``), and an admitted call's
chain is checked right after its admission, every link at once (chain_link.lua); names without a
tag share the tag ``{-}``. One Redis runs the same layout (deployment keys without the braces),
the chain checked within the admission.
"""

from __future__ import annotations

import asyncio
import math
import uuid
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import cast

import orjson

from counters.cluster import ClusterPipelinedRedis, is_cluster_url
from counters.pipelined import PipelinedRedis, Script
from counters.store import (
    LATENCY_ALPHA,
    REAPED_MARK_S,
    RECOVERY_HOLD_S,
    RUN_STATE_TTL_S,
    WINDOW_S,
    Admission,
    Bucket,
    ChainCheck,
    ClaimStatus,
    CounterStore,
    OutputFit,
    RateCheck,
    RateLimited,
    RateWindow,
    RunCheck,
    Settle,
    _budget_refusal,
    _check_admit,
    _check_money,
)

# Reservations released per reap step, so one step never blocks Redis for long.
REAP_BATCH = 500

_LUA_DIR = Path(__file__).with_name("lua")


def _lua(*names: str) -> str:
    return "\n".join((_LUA_DIR / f"{name}.lua").read_text() for name in names)


_ADMIT = Script(_lua("number", "chain", "epoch", "admit"))
# Where admit.lua takes the epoch its worker last saw.
_EPOCH_ARG = 9
_NO_FIT = ("", "", "", "")
_NO_RUN = ("", "", "")
_KEEPALIVE = Script(_lua("epoch", "keepalive"))
_RESTORE = Script(_lua("restore"))
_SETTLE = Script(_lua("number", "ledger", "release", "settle"))
_REAP = Script(_lua("number", "ledger", "release", "reap"))
_REAP_SETTLED = Script(_lua("number", "ledger", "release", "reap_settled"))
_SEED = Script(_lua("number", "ledger", "seed"))
_BREAKER_RECORD = Script(_lua("breaker_record"))
_LATENCY = Script(_lua("latency"))
_RUN_TOOLS = Script(_lua("run_tools"))
_IDEMPOTENCY = Script(_lua("idempotency"))
_CHAIN_LINK = Script(_lua("number", "chain", "chain_link"))


@dataclass(slots=True)
class _Held:
    """A reservation as the worker that made it remembers it, in Redis's terms (the in-process
    store's ``_Open``)."""

    record: bytes
    buckets: tuple[tuple[str, int], ...]
    parallel_key: str
    ttl_s: float
    deadline: float
    renew_at: float
    tag: str = ""


@dataclass(slots=True)
class _Shape:
    """What an admission's key names come to, the same for every call of a key, its chain and
    its run or none (``RedisCounterStore._shape``): its buckets' and rate key's names as the store
    keeps them, their hash tag, and the script's keys but the reservation's own (KEYS[2..])."""

    names: tuple[str, ...]
    rate_key: str
    tag: str
    keys: tuple[str, ...]
    parallel_key: str
    chain_inside: bool


def _glob_escape(text: str) -> str:
    return "".join("\\" + ch if ch in "*?[]\\" else ch for ch in text)


def _chain_check(reply: list) -> ChainCheck:
    skip, probes = reply
    return ChainCheck(skip={d.decode() for d in skip}, probes={d.decode() for d in probes})


def _window(limit: bytes, remaining: bytes, reset: bytes) -> RateWindow | None:
    if not limit:
        return None
    return RateWindow(int(limit), int(remaining), float(reset))


def shard_tag(name: str) -> str:
    """The hash tag a name begins with (``{o3}b:key:42:…`` -> ``{o3}``), or ``""``: a reservation's
    own keys (its record, the deadline index, the epoch and hold) take its buckets' tag."""
    if name.startswith("{"):
        end = name.find("}")
        if end > 1:
            return name[:end + 1]
    return ""


class _KeyNames:
    """The Redis key names of one store, built once each: the hot path asks for the same few
    (a key's windows, its buckets, its chain) on every call. Bucket names carry their period,
    so a table that fills up is emptied rather than kept growing."""

    MAX_ENTRIES = 10_000

    def __init__(self, prefix: str, *, cluster: bool = False) -> None:
        self.prefix = prefix
        # A deployment's circuit, cooldown and latency: on a cluster in a slot of its own.
        self._deployment_tagged = cluster
        self.tags = self.key("tags")
        # On a cluster, names without a hash tag of their own share this one (one slot).
        self.untagged = "{-}" if cluster else ""
        self._shards: dict[str, tuple[str, str, str]] = {}
        self._rates: dict[str, tuple[str, ...]] = {}
        self._buckets: dict[str, tuple[str, ...]] = {}
        self._chains: dict[tuple[str, ...], tuple[str, ...]] = {}

    def key(self, *parts: str) -> str:
        """Any key of the store (the layout is in the module's doc)."""
        return self.prefix + ":".join(parts)

    def placed(self, name: str) -> str:
        """A bucket's or rate key's name as the store keeps it: with a hash tag on a cluster."""
        return name if not self.untagged or shard_tag(name) else self.untagged + name

    def deployment(self, kind: str, deployment: str) -> str:
        """A key of a deployment's state: ``cb`` its circuit, ``cd`` its cooldown, ``lat`` its latency."""
        return self.key(kind, "{d:" + deployment + "}" if self._deployment_tagged else deployment)

    def shard(self, tag: str) -> tuple[str, str, str]:
        """The deadline index, epoch and recovery hold of the reservations of one hash tag."""
        names = self._shards.get(tag)
        if names is None:
            names = self._remember(self._shards, tag, tuple(self.key(n) + tag for n in ("deadlines", "epoch", "hold")))
        return names

    def rate(self, rate_key: str) -> tuple[str, ...]:
        """A key's request window, token window and set of calls in flight."""
        names = self._rates.get(rate_key)
        if names is None:
            windows = tuple(self.key("rl", rate_key, window) for window in ("req", "tok", "par"))
            names = self._remember(self._rates, rate_key, windows)
        return names

    def bucket(self, name: str) -> tuple[str, ...]:
        """A bucket's settled counter and reserved hash."""
        names = self._buckets.get(name)
        if names is None:
            names = self._remember(self._buckets, name, (self.key("s", name), self.key("r", name)))
        return names

    def chain(self, deployments: Sequence[str]) -> tuple[str, ...]:
        """Each deployment's cooldown, then each deployment's circuit breaker (chain.lua)."""
        deployments = tuple(deployments)
        names = self._chains.get(deployments)
        if names is None:
            names = self._remember(self._chains, deployments, (*(self.deployment("cd", d) for d in deployments),
                                                               *(self.deployment("cb", d) for d in deployments)))
        return names

    def _remember(self, table: dict, key, names: tuple[str, ...]) -> tuple[str, ...]:
        if len(table) >= self.MAX_ENTRIES:
            table.clear()
        table[key] = names
        return names


class RedisCounterStore(CounterStore):
    """The shared store. ``prefix`` namespaces every key, so tests (or two deployments) can share
    one Redis and ``clear`` only their own keys.

    Each worker's store also remembers the reservations it made and has not settled (``_open``):
    to push back their deadlines while their calls run, and to put them back should Redis lose
    them (epoch.lua)."""

    def __init__(self, url: str, *, prefix: str = "nemo:", recovery_hold_s: float = RECOVERY_HOLD_S) -> None:
        # One pipelined connection per worker (counters/pipelined.py says why); on a cluster,
        # one per node (counters/cluster.py).
        self._cluster = is_cluster_url(url)
        self._redis = ClusterPipelinedRedis(url) if self._cluster else PipelinedRedis(url)
        self._names = _KeyNames(prefix, cluster=self._cluster)
        self._prefix = prefix
        self._hold_ms = max(1, round(recovery_hold_s * 1000))
        self._open: dict[str, _Held] = {}
        # Each hash tag's epoch as this worker last saw it (none yet: not there).
        self._epochs: dict[str, bytes] = {}
        # The tags this worker put in the registry the reaper walks (``tags``).
        self._registered: set[str] = set()
        # The tag of each reservation the last ``due`` found, for the reaper's next steps.
        self._due_tags: dict[str, str] = {}
        # Each admission shape's key names (``_shape``), by its buckets, rate key, chain and run.
        self._shapes: dict[tuple, _Shape] = {}

    def _key(self, *parts: str) -> str:
        return self._names.key(*parts)

    def _shape(self, shape_key: tuple, buckets: Sequence[Bucket], rate: RateCheck | None, chain: Sequence[str],
               run: RunCheck | None) -> _Shape:
        """An admission shape's key names: admit.lua's KEYS but the first, in its order."""
        placed = self._names.placed
        names = tuple(placed(bucket.name) for bucket in buckets)
        rate_key = placed(rate.key) if rate else ""
        # The reservation's own keys share its buckets' hash tag; inside Redis it goes by its tagged id.
        tag = shard_tag(names[0] if names else rate_key) or self._names.untagged
        deadlines, epoch_key, hold_key = self._names.shard(tag)
        # Without a rate, any key of the slot stands in for the windows (admit.lua never reads them).
        rate_keys = self._names.rate(rate_key) if rate else (deadlines, deadlines, deadlines)
        # KEYS[8], the run's state: without a run, any key stands in (admit.lua never reads it).
        run_key = self._key("run", names[-1]) if run is not None else deadlines
        keys = [deadlines, epoch_key, hold_key, *rate_keys, run_key]
        for name in names:
            keys += self._names.bucket(name)
        # On a cluster the deployments' state is in a slot of its own: checked right after.
        chain_inside = bool(chain) and not self._cluster
        if chain_inside:
            keys += self._names.chain(chain)
        shape = _Shape(names, rate_key, tag, tuple(keys), rate_keys[2], chain_inside)
        if len(self._shapes) >= _KeyNames.MAX_ENTRIES:
            self._shapes.clear()
        self._shapes[shape_key] = shape
        return shape

    def _tag_of(self, reservation_id: str) -> str:
        held = self._open.get(reservation_id)
        return held.tag if held is not None else self._due_tags.get(reservation_id, self._names.untagged)

    async def _tags(self) -> list[str]:
        """Every hash tag that may hold reservations (the registry, and no tag)."""
        members = await self._redis.execute("SMEMBERS", self._names.tags)
        return sorted({self._names.untagged, *(member.decode() for member in members)})

    async def _register(self, tag: str) -> None:
        if len(self._registered) >= _KeyNames.MAX_ENTRIES:
            self._registered.clear()
        await self._redis.execute("SADD", self._names.tags, tag)
        self._registered.add(tag)

    async def admit(
        self,
        *,
        reservation_id: str,
        buckets: Sequence[Bucket],
        rate: RateCheck | None,
        now: float,
        ttl_s: float,
        chain: Sequence[str] = (),
        probe_lease_s: float = 30.0,
        trail: dict | None = None,
        fit: OutputFit | None = None,
        run: RunCheck | None = None,
    ) -> Admission:
        _check_admit(reservation_id, buckets, rate, run)
        # The hot path's one round trip: its key names are worked out once per shape (``_shape``),
        # and everything below is list building and number formatting.
        # (The count first: the names that follow it are the buckets', the rest the rate key's and the chain's.)
        shape_key = (len(buckets), *[bucket.name for bucket in buckets], rate.key if rate else None,
                     run is not None, *chain)
        shape = self._shapes.get(shape_key)
        if shape is None:
            shape = self._shape(shape_key, buckets, rate, chain, run)
        names, tag = shape.names, shape.tag
        tagged_id = tag + reservation_id
        keys = [self._key("res", tagged_id), *shape.keys]
        record: dict[str, object] = {"b": names}
        limits = ["", "", "", "0"]
        if rate is not None:
            record.update(rk=shape.rate_key, tk=rate.tokens)
            if rate.tpm:
                record["ti"] = WINDOW_S / rate.tpm
            limits = [str(x) if x is not None else "" for x in (rate.rpm, rate.tpm, rate.max_parallel)]
            limits.append(str(rate.tokens))
        if trail is not None:
            record["c"] = trail
        packed = orjson.dumps(record)
        deadline = now + ttl_s
        # The epoch this worker saw goes at EPOCH_ARG; the call's own id stands for a new epoch.
        args = [tagged_id, repr(now), repr(deadline), packed, *limits, len(buckets), self._epochs.get(tag, b""),
                reservation_id, self._hold_ms,
                *((fit.base, fit.price_pico, fit.fewest, fit.most) if fit is not None else _NO_FIT),
                *(_run_args(run) if run is not None else _NO_RUN)]
        for bucket in buckets:
            args += (bucket.limit, bucket.amount)
        chain_inside = shape.chain_inside
        if chain_inside:
            args += (repr(probe_lease_s), *chain)

        # The tag goes into the registry the reaper walks before its first reservation can exist:
        # a worker that died between its admission and the registry's update would have left that
        # reservation where no reaper looks, its budget held for good.
        if tag not in self._registered:
            await self._register(tag)
        reply = await self._redis.evalsha(_ADMIT, keys, args)
        if reply[0] == b"lost":
            # Redis lost its state: this worker's calls in flight go back before it admits more.
            await self._restore(tag, reply[7])
            args[_EPOCH_ARG] = self._epochs[tag]
            reply = await self._redis.evalsha(_ADMIT, keys, args)
        status = reply[0]
        if status == b"ok":
            if reply[7] != self._epochs.get(tag):
                self._epochs[tag] = reply[7]
            parallel = shape.parallel_key if rate is not None and rate.max_parallel is not None else ""
            amount = int(reply[8])
            if fit is not None and buckets:
                # As admit.lua wrote the record.
                packed = packed[:-1] + b',"a":%d}' % amount
            self._open[reservation_id] = _Held(packed, tuple((name, amount) for name in names), parallel,
                                               ttl_s, deadline, now + ttl_s / 3, tag)
            checked = None
            if chain:
                checked = (_chain_check(reply[10:12]) if chain_inside
                           else await self._chain_apart(chain, now, probe_lease_s))
            return Admission("ok", requests=_window(*reply[1:4]), tokens=_window(*reply[4:7]),
                             chain=checked, amount=amount,
                             output_tokens=int(reply[9]) if reply[9] else None)
        if status in (b"hold", b"lost"):
            return Admission("hold", retry_after=int(reply[7]) / 1000 if status == b"hold" else self._hold_ms / 1000)
        shown = Admission("ok", requests=_window(*reply[1:4]), tokens=_window(*reply[4:7]))
        rest = reply[7:]
        if status == b"rate_limited":
            return replace(shown, status="rate_limited", which=cast(RateLimited, rest[0].decode()),
                           retry_after=float(rest[1]))
        if status == b"missing":
            return replace(shown, status="missing", missing=[buckets[int(i) - 1].name for i in rest])
        if status == b"loop":
            return replace(shown, status="loop", param="run", repeats=int(rest[0]))
        if status == b"steps":
            return replace(shown, status="budget", param="run", steps=int(rest[0]))
        return _budget_refusal(shown, buckets[int(rest[0]) - 1], int(rest[1]) + int(rest[2]), int(rest[3]))

    async def _chain_apart(self, chain: Sequence[str], now: float, lease_s: float) -> ChainCheck:
        """On a cluster, an admitted call's chain check (chain.lua): every link in its own slot at
        once, then the probe of the first link due one, if no usable link comes before it."""
        names = self._names.chain(chain)
        links = len(chain)

        def check(i: int, may_probe: str) -> Awaitable:
            return self._redis.evalsha(_CHAIN_LINK, [names[i], names[links + i]],
                                       [repr(now), repr(lease_s), may_probe])

        checks = await asyncio.gather(*(check(i, "0") for i in range(links)))
        skip, probes, usable = set(), set(), False
        for i, deployment in enumerate(chain):
            found = checks[i]
            if found == b"due" and not usable:
                found = await check(i, "1")
            if found in (b"skip", b"due"):
                skip.add(deployment)
            else:
                usable = True
                if found == b"probe":
                    probes.add(deployment)
        return ChainCheck(skip=skip, probes=probes)

    async def idempotency_claim(self, name: str, fingerprint: str, *,
                                pending_s: float) -> tuple[ClaimStatus, bytes | None]:
        reply = await self._redis.evalsha(_IDEMPOTENCY, [self._key("idem", name)],
                                          ["claim", fingerprint, math.ceil(pending_s * 1000)])
        return cast(ClaimStatus, reply[0].decode()), reply[1] if len(reply) > 1 else None

    async def idempotency_keep(self, name: str, fingerprint: str, answer: bytes, *, ttl_s: float) -> None:
        await self._redis.evalsha(_IDEMPOTENCY, [self._key("idem", name)],
                                  ["keep", fingerprint, answer, math.ceil(ttl_s * 1000)])

    async def idempotency_drop(self, name: str, fingerprint: str) -> None:
        await self._redis.evalsha(_IDEMPOTENCY, [self._key("idem", name)], ["drop", fingerprint])

    async def run_tool_calls(self, run_bucket: str, signatures: Sequence[str]) -> None:
        if signatures:
            await self._redis.evalsha(_RUN_TOOLS, [self._key("run", self._names.placed(run_bucket))],
                                      [RUN_STATE_TTL_S * 1000, *signatures])

    async def _restore(self, tag: str, epoch: bytes) -> None:
        """Puts this worker's calls in flight of one hash tag back into a store that lost them
        (restore.lua)."""
        args: list = [self._prefix]
        for reservation_id, held in self._open.items():
            if held.tag != tag:
                continue
            args += (tag + reservation_id, repr(held.deadline), held.record, held.parallel_key, len(held.buckets))
            for name, amount in held.buckets:
                args += (name, amount)
        if len(args) > 1:
            await self._redis.evalsha(_RESTORE, [self._names.shard(tag)[0]], args)
        self._epochs[tag] = epoch

    async def keepalive(self, *, now: float) -> None:
        """One heartbeat step for each hash tag (org) of this worker's calls in flight (for no
        tag, when there are none: one step, as on an idle worker), and those tags back in the
        registry, should it have been lost. A tag without calls in flight here has nothing to put
        back: its next admission notices a loss as well (epoch.lua)."""
        renewals: dict[str, list] = {}
        for reservation_id, held in self._open.items():
            tagged = renewals.setdefault(held.tag, [])
            if held.renew_at <= now:
                held.deadline, held.renew_at = now + held.ttl_s, now + held.ttl_s / 3
                tagged += (repr(held.deadline), held.tag + reservation_id)
        in_flight = list(renewals)
        if not renewals:
            renewals[self._names.untagged] = []
        if len(self._epochs) > _KeyNames.MAX_ENTRIES:
            self._epochs = {tag: self._epochs[tag] for tag in in_flight if tag in self._epochs}
        steps = [self._redis.evalsha(_KEEPALIVE, [self._names.shard(tag)[1], self._names.shard(tag)[2],
                                                  self._names.shard(tag)[0]],
                                     [self._epochs.get(tag, b""), uuid.uuid4().hex, self._hold_ms, *tagged])
                 for tag, tagged in renewals.items()]
        if in_flight:
            steps.append(self._redis.execute("SADD", self._names.tags, *in_flight))
        replies = await asyncio.gather(*steps)
        for tag, (status, epoch) in zip(renewals, replies, strict=False):
            if status == b"lost":
                await self._restore(tag, epoch)
            else:
                self._epochs[tag] = epoch

    def open_reservations(self) -> list[str]:
        return list(self._open)

    def settle_many(self, settlements: Sequence[Settle], position: int | None = None, *,
                    charge_missing: bool = True) -> Awaitable[list[bool]]:
        """One script call for the whole batch (settle.lua), written before this returns (see
        ``PipelinedRedis.evalsha``): the log writer sends it and answers its callers."""
        groups: dict[str, _Group] = {}
        for index, (rid, cost, tokens, names) in enumerate(settlements):
            _check_money(cost, "actual_cost")
            held = self._open.pop(rid, None)
            names = [self._names.placed(name) for name in names]
            tag = held.tag if held is not None else shard_tag(names[0]) if names else self._names.untagged
            group = groups.get(tag)
            if group is None:
                group = groups[tag] = _Group(
                    [self._prefix, "" if position is None else position, "1" if charge_missing else "0"])
            group.add(index, tag + rid, cost, tokens, len(names), *names)
        return _settled({tag: self._redis.evalsha(_SETTLE, [self._names.shard(tag)[0]], group.args)
                         for tag, group in groups.items()}, groups, len(settlements))

    async def due(self, *, now: float) -> list[str]:
        tags = await self._tags()
        found = await asyncio.gather(*(self._redis.execute("ZRANGEBYSCORE", self._names.shard(tag)[0], "-inf",
                                                           repr(now)) for tag in tags))
        self._due_tags = {}
        for tag, tagged_ids in zip(tags, found, strict=True):
            for tagged_id in tagged_ids:
                self._due_tags[tagged_id.decode()[len(tag):]] = tag
        return list(self._due_tags)

    async def trails(self, reservation_ids: Sequence[str]) -> dict[str, dict]:
        if not reservation_ids:
            return {}
        by_tag: dict[str, list[str]] = {}
        for rid in reservation_ids:
            by_tag.setdefault(self._tag_of(rid), []).append(rid)
        found: dict[str, dict] = {}
        for tag, rids in by_tag.items():
            records = await self._redis.execute("MGET", *(self._key("res", tag + rid) for rid in rids))
            found.update({rid: orjson.loads(record) for rid, record in zip(rids, records, strict=True)
                          if record is not None})
        # A fitted call's record says what it reserved (admit.lua).
        return {rid: {**record["c"], "amount": record["a"]} if "a" in record else record["c"]
                for rid, record in found.items() if record.get("c")}

    async def reap_settled(self, settlements: Sequence[tuple[str, int, int]], position: int | None) -> list[bool]:
        groups: dict[str, _Group] = {}
        for index, (rid, cost, tokens) in enumerate(settlements):
            _check_money(cost, "actual_cost")
            tag = self._tag_of(rid)
            group = groups.get(tag)
            if group is None:
                group = groups[tag] = _Group([self._prefix, "" if position is None else position, REAPED_MARK_S])
            group.add(index, tag + rid, cost, tokens)
        return await _settled({tag: self._redis.evalsha(_REAP_SETTLED, [self._names.shard(tag)[0]], group.args)
                               for tag, group in groups.items()}, groups, len(settlements))

    async def reap(self, *, now: float) -> list[str]:
        released: list[str] = []
        for tag in await self._tags():
            while True:
                reply = await self._redis.evalsha(_REAP, keys=[self._names.shard(tag)[0]],
                                                  args=[self._prefix, repr(now), REAP_BATCH])
                released += [tagged_id.decode()[len(tag):] for tagged_id in reply[1:]]
                if reply[0] < REAP_BATCH:
                    break
        return released

    async def seed(self, name: str, value: int, *, ttl_s: float | None = None, snapshot: str | None = None) -> bool:
        _check_money(value, "value")
        expiry = "" if ttl_s is None else math.ceil(ttl_s * 1000)
        name = self._names.placed(name)
        keys = [self._key("s", name), self._key("sx", name), self._key("pc", name)]
        return await self._redis.evalsha(_SEED, keys, [value, expiry, snapshot or ""]) == 1

    async def read(self, names: Sequence[str]) -> dict[str, int | None]:
        if not names:
            return {}
        by_tag: dict[str, list[str]] = {}
        for name in names:
            by_tag.setdefault(shard_tag(self._names.placed(name)), []).append(name)
        out: dict[str, int | None] = {}
        for tagged in by_tag.values():
            commands = []
            for name in map(self._names.placed, tagged):
                commands += [("GET", self._key("s", name)), ("HGET", self._key("r", name), "total")]
            replies = await self._redis.transaction(commands)
            for i, name in enumerate(tagged):
                settled, reserved = replies[2 * i], replies[2 * i + 1]
                out[name] = None if settled is None else int(settled) + int(reserved or 0)
        return out

    async def breaker_record(
        self,
        deployment: str,
        ok: bool,
        now: float,
        *,
        failure_threshold: int = 5,
        window_s: float = 30.0,
        open_s: float = 30.0,
    ) -> None:
        await self._redis.evalsha(
            _BREAKER_RECORD,
            keys=[self._names.deployment("cb", deployment)],
            args=["1" if ok else "0", repr(now), failure_threshold, repr(window_s), repr(open_s)],
        )

    async def circuits(self, deployments: Sequence[str]) -> dict[str, str]:
        if not deployments:
            return {}
        states = await self._redis.scatter([("HGET", self._names.deployment("cb", d), "state") for d in deployments])
        return {d: state.decode() if state else "closed" for d, state in zip(deployments, states, strict=True)}

    async def reservations_outstanding(self) -> int:
        counts = await asyncio.gather(*(self._redis.execute("ZCARD", self._names.shard(tag)[0])
                                        for tag in await self._tags()))
        return sum(counts)

    async def cooldown_set(self, deployment: str, until: float) -> None:
        await self._redis.execute("SET", self._names.deployment("cd", deployment), repr(until))

    async def cooldowns_until(self, deployments: Sequence[str], now: float) -> dict[str, float]:
        if not deployments:
            return {}
        untils = await self._redis.scatter([("GET", self._names.deployment("cd", d)) for d in deployments])
        return {d: float(until) for d, until in zip(deployments, untils, strict=True)
                if until is not None and float(until) > now}

    async def latency_record(self, deployment: str, ms: float) -> None:
        await self._redis.evalsha(_LATENCY, keys=[self._names.deployment("lat", deployment)],
                                  args=[repr(ms), repr(LATENCY_ALPHA)])

    async def latency_get(self, deployments: Sequence[str]) -> dict[str, float | None]:
        if not deployments:
            return {}
        values = await self._redis.scatter([("GET", self._names.deployment("lat", d)) for d in deployments])
        return {d: None if v is None else float(v) for d, v in zip(deployments, values, strict=True)}

    async def cache_get(self, key: str) -> bytes | None:
        return await self._redis.execute("GET", self._key("cache", key))

    async def cache_set(self, key: str, value: bytes, ttl_s: float) -> None:
        await self._redis.execute("SET", self._key("cache", key), value, "PX", math.ceil(ttl_s * 1000))

    async def clear(self) -> None:
        for node in await self._redis.nodes():
            await _clear_node(node, _glob_escape(self._prefix) + "*")

    async def close(self) -> None:
        await self._redis.close()


async def _clear_node(node: PipelinedRedis, pattern: str) -> None:
    """Unlinks one node's keys matching ``pattern``, one key a command (a cluster's keys of one
    command must share a slot)."""
    cursor = b"0"
    while True:
        cursor, keys = await node.execute("SCAN", cursor, "MATCH", pattern, "COUNT", 1000)
        if keys:
            await node.batch([("UNLINK", key) for key in keys])
        if cursor == b"0":
            return


def _run_args(run: RunCheck) -> tuple[str, str, str]:
    """admit.lua's ARGV[17..19]."""
    return ("" if run.envelope is None else str(run.envelope), "" if run.max_steps is None else str(run.max_steps),
            str(run.loop_limit))


class _Group:
    """The script arguments of the calls of one hash tag in a batch, and where each call was."""

    __slots__ = ("args", "indexes")

    def __init__(self, args: list) -> None:
        self.args = args
        self.indexes: list[int] = []

    def add(self, index: int, *call) -> None:
        self.indexes.append(index)
        self.args += call


async def _settled(replies: dict[str, Awaitable[list[int]]], groups: dict[str, _Group], count: int) -> list[bool]:
    """Each call's reply in the batch's order: 1: settled now; 2: settled by the reaper already;
    3: gone, and charged (settle.lua); 0: gone."""
    out = [False] * count
    for tag, reply in replies.items():
        for index, settled in zip(groups[tag].indexes, await reply, strict=True):
            out[index] = settled != 0
    return out
