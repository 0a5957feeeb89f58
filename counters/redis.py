"""The shared store: every gateway worker on every machine shares one Redis. Each hot-path step
is one Lua script (``lua/``), so it is atomic across workers and costs one round trip.

Redis must evict, if at all, only keys with a TTL (``maxmemory-policy volatile-*``): those are
cache entries, rate windows and seeded counters, each safe to lose; reservations and the epoch
carry no TTL and are never evicted.

Key layout (prefix ``nemo:`` by default)::

    s:<bucket>            string  settled spend, micro-dollars
    sx:<bucket>           string  the ledger snapshot s:<bucket> was rebuilt at, same TTL
    r:<bucket>            hash    res:<id> -> amount of each outstanding reservation, total -> sum
    pc:<bucket>           list    "position:cost" settled while s:<bucket> was missing, for its rebuild
    run:<bucket>          hash    a run's state (admit.lua): limit (its envelope), steps, loop and
                                  tc:<tool call> (run_tools.lua); lives RUN_STATE_TTL_S past its last call
    res:<id>              string  reservation record (JSON: buckets, rate key, tokens reserved, trail)
    reaped:<id>           string  the reaper settled <id> from its log row (reap_settled), for an hour
    deadlines             zset    reservation id -> deadline, for the reaper
    epoch                 string  the store's epoch (epoch.lua), no TTL: gone means Redis lost its state
    hold                  string  after a loss, admissions wait while this lives
    rl:<key>:req          string  request window (GCRA: when the window is full again)
    rl:<key>:tok          string  token window, same
    rl:<key>:par          set     ids of the key's calls in flight
    cb:<deployment>       hash    circuit breaker: state, until, failures
    cooldowns             hash    deployment -> cooling down until
    lat:<deployment>      string  latency average, ms
    cache:<key>           string  cached response, with its TTL
    idem:<name>           hash    an Idempotency-Key's claim (f) and kept answer (a), with its TTL

Settle and reap find a reservation's keys through its record rather than through ``KEYS``.
On a Redis Cluster (a ``redis+cluster://`` URL, counters/cluster.py) every key above but the
cache and the Idempotency-Key entries is named under one hash tag, the prefix in braces
(``{nemo:}s:<bucket>``): each script's keys, and the keys its records name, then share one slot.
The cache and Idempotency-Key entries, single-key steps, spread over the nodes. One Redis keeps
the plain names.
"""

from __future__ import annotations

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


_ADMIT = Script(_lua("chain", "epoch", "admit"))
# Where admit.lua takes the epoch its worker last saw.
_EPOCH_ARG = 9
_NO_FIT = ("", "", "", "")
_NO_RUN = ("", "", "")
_KEEPALIVE = Script(_lua("epoch", "keepalive"))
_RESTORE = Script(_lua("restore"))
_SETTLE = Script(_lua("ledger", "release", "settle"))
_REAP = Script(_lua("ledger", "release", "reap"))
_REAP_SETTLED = Script(_lua("ledger", "release", "reap_settled"))
_SEED = Script(_lua("ledger", "seed"))
_BREAKER_RECORD = Script(_lua("breaker_record"))
_LATENCY = Script(_lua("latency"))
_RUN_TOOLS = Script(_lua("run_tools"))
_IDEMPOTENCY = Script(_lua("idempotency"))


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


def _glob_escape(text: str) -> str:
    return "".join("\\" + ch if ch in "*?[]\\" else ch for ch in text)


def _chain_check(reply: list) -> ChainCheck:
    skip, probes = reply
    return ChainCheck(skip={d.decode() for d in skip}, probes={d.decode() for d in probes})


def _window(limit: bytes, remaining: bytes, reset: bytes) -> RateWindow | None:
    if not limit:
        return None
    return RateWindow(int(limit), int(remaining), float(reset))


class _KeyNames:
    """The Redis key names of one store, built once each: the hot path asks for the same few
    (a key's windows, its buckets, its chain) on every call. Bucket names carry their period,
    so a table that fills up is emptied rather than kept growing."""

    MAX_ENTRIES = 10_000

    def __init__(self, prefix: str, *, tagged: bool = False) -> None:
        # The prefix of the admission state (the module's doc): on a cluster, one hash tag.
        self.prefix = "{" + prefix + "}" if tagged else prefix
        # Of the keys any node may hold (the cache, Idempotency-Key entries).
        self.spread_prefix = prefix
        self.deadlines = self.key("deadlines")
        self.epoch = self.key("epoch")
        self.hold = self.key("hold")
        self._rates: dict[str, tuple[str, ...]] = {}
        self._buckets: dict[str, tuple[str, ...]] = {}
        self._chains: dict[tuple[str, ...], tuple[str, ...]] = {}

    def key(self, *parts: str) -> str:
        """Any key of the admission state (the layout is in the module's doc)."""
        return self.prefix + ":".join(parts)

    def spread(self, *parts: str) -> str:
        """A key of a single-key step (the cache, an Idempotency-Key entry)."""
        return self.spread_prefix + ":".join(parts)

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
        """The cooldowns hash, then each deployment's circuit breaker (chain.lua)."""
        deployments = tuple(deployments)
        names = self._chains.get(deployments)
        if names is None:
            names = self._remember(self._chains, deployments,
                                   (self.key("cooldowns"), *(self.key("cb", d) for d in deployments)))
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
        cluster = is_cluster_url(url)
        self._redis = ClusterPipelinedRedis(url) if cluster else PipelinedRedis(url)
        self._names = _KeyNames(prefix, tagged=cluster)
        self._prefix = self._names.prefix
        self._hold_ms = max(1, round(recovery_hold_s * 1000))
        self._open: dict[str, _Held] = {}
        # The store's epoch as this worker last saw it (b"": none yet).
        self._epoch = b""

    def _key(self, *parts: str) -> str:
        return self._names.key(*parts)

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
        # The hot path's one round trip: key names are built once per worker (_names), and
        # everything below is list building and number formatting.
        rate_keys = self._names.rate(rate.key if rate else "")
        keys = [self._key("res", reservation_id), self._names.deadlines, self._names.epoch, self._names.hold,
                # KEYS[8], the run's state: without a run, any key stands in (admit.lua never reads it).
                *rate_keys, self._key("run", buckets[-1].name) if run is not None else self._names.deadlines]
        record: dict[str, object] = {"b": [bucket.name for bucket in buckets]}
        limits = ["", "", "", "0"]
        if rate is not None:
            record.update(rk=rate.key, tk=rate.tokens)
            if rate.tpm:
                record["ti"] = WINDOW_S / rate.tpm
            limits = [str(x) if x is not None else "" for x in (rate.rpm, rate.tpm, rate.max_parallel)]
            limits.append(str(rate.tokens))
        if trail is not None:
            record["c"] = trail
        packed = orjson.dumps(record)
        deadline = now + ttl_s
        # The epoch this worker saw goes at EPOCH_ARG; the call's own id stands for a new epoch.
        args = [reservation_id, repr(now), repr(deadline), packed, *limits, len(buckets), self._epoch,
                reservation_id, self._hold_ms,
                *((fit.base, fit.price_pico, fit.fewest, fit.most) if fit is not None else _NO_FIT),
                *(_run_args(run) if run is not None else _NO_RUN)]
        for bucket in buckets:
            keys += self._names.bucket(bucket.name)
            args += (bucket.limit, bucket.amount)
        if chain:
            keys += self._names.chain(chain)
            args += (repr(probe_lease_s), *chain)

        reply = await self._redis.evalsha(_ADMIT, keys, args)
        if reply[0] == b"lost":
            # Redis lost its state: this worker's calls in flight go back before it admits more.
            await self._restore(reply[7])
            args[_EPOCH_ARG] = self._epoch
            reply = await self._redis.evalsha(_ADMIT, keys, args)
        status = reply[0]
        if status == b"ok":
            if reply[7] != self._epoch:
                self._epoch = reply[7]
            parallel = rate_keys[2] if rate is not None and rate.max_parallel is not None else ""
            amount = int(reply[8])
            if fit is not None and buckets:
                # As admit.lua wrote the record.
                packed = packed[:-1] + b',"a":%d}' % amount
            self._open[reservation_id] = _Held(packed, tuple((b.name, amount) for b in buckets), parallel,
                                               ttl_s, deadline, now + ttl_s / 3)
            return Admission("ok", requests=_window(*reply[1:4]), tokens=_window(*reply[4:7]),
                             chain=_chain_check(reply[10:12]) if chain else None, amount=amount,
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

    async def idempotency_claim(self, name: str, fingerprint: str, *,
                                pending_s: float) -> tuple[ClaimStatus, bytes | None]:
        reply = await self._redis.evalsha(_IDEMPOTENCY, [self._names.spread("idem", name)],
                                          ["claim", fingerprint, math.ceil(pending_s * 1000)])
        return cast(ClaimStatus, reply[0].decode()), reply[1] if len(reply) > 1 else None

    async def idempotency_keep(self, name: str, fingerprint: str, answer: bytes, *, ttl_s: float) -> None:
        await self._redis.evalsha(_IDEMPOTENCY, [self._names.spread("idem", name)],
                                  ["keep", fingerprint, answer, math.ceil(ttl_s * 1000)])

    async def idempotency_drop(self, name: str, fingerprint: str) -> None:
        await self._redis.evalsha(_IDEMPOTENCY, [self._names.spread("idem", name)], ["drop", fingerprint])

    async def run_tool_calls(self, run_bucket: str, signatures: Sequence[str]) -> None:
        if signatures:
            await self._redis.evalsha(_RUN_TOOLS, [self._key("run", run_bucket)],
                                      [RUN_STATE_TTL_S * 1000, *signatures])

    async def _restore(self, epoch: bytes) -> None:
        """Puts this worker's calls in flight back into a store that lost them (restore.lua)."""
        args: list = [self._prefix]
        for reservation_id, held in self._open.items():
            args += (reservation_id, repr(held.deadline), held.record, held.parallel_key, len(held.buckets))
            for name, amount in held.buckets:
                args += (name, amount)
        if len(args) > 1:
            await self._redis.evalsha(_RESTORE, [self._names.deadlines], args)
        self._epoch = epoch

    async def keepalive(self, *, now: float) -> None:
        renewals: list = []
        for reservation_id, held in self._open.items():
            if held.renew_at <= now:
                held.deadline, held.renew_at = now + held.ttl_s, now + held.ttl_s / 3
                renewals += (repr(held.deadline), reservation_id)
        keys = [self._names.epoch, self._names.hold, self._names.deadlines]
        status, epoch = await self._redis.evalsha(_KEEPALIVE, keys,
                                                  [self._epoch, uuid.uuid4().hex, self._hold_ms, *renewals])
        if status == b"lost":
            await self._restore(epoch)
        else:
            self._epoch = epoch

    def open_reservations(self) -> list[str]:
        return list(self._open)

    def settle_many(self, settlements: Sequence[Settle], position: int | None = None, *,
                    charge_missing: bool = True) -> Awaitable[list[bool]]:
        """One script call for the whole batch (settle.lua), written before this returns (see
        ``PipelinedRedis.evalsha``): the log writer sends it and answers its callers."""
        args: list = [self._prefix, "" if position is None else position, "1" if charge_missing else "0"]
        for rid, cost, tokens, names in settlements:
            _check_money(cost, "actual_cost")
            self._open.pop(rid, None)
            args += (rid, cost, tokens, len(names), *names)
        return _settled(self._redis.evalsha(_SETTLE, [self._names.deadlines], args) if settlements else None)

    async def due(self, *, now: float) -> list[str]:
        return [rid.decode() for rid in await self._redis.execute("ZRANGEBYSCORE", self._names.deadlines, "-inf",
                                                                  repr(now))]

    async def trails(self, reservation_ids: Sequence[str]) -> dict[str, dict]:
        if not reservation_ids:
            return {}
        records = await self._redis.execute("MGET", *(self._key("res", rid) for rid in reservation_ids))
        found = {rid: orjson.loads(record) for rid, record in zip(reservation_ids, records, strict=True)
                 if record is not None}
        # A fitted call's record says what it reserved (admit.lua).
        return {rid: {**record["c"], "amount": record["a"]} if "a" in record else record["c"]
                for rid, record in found.items() if record.get("c")}

    async def reap_settled(self, settlements: Sequence[tuple[str, int, int]], position: int | None) -> list[bool]:
        args: list = [self._prefix, "" if position is None else position, REAPED_MARK_S]
        for rid, cost, tokens in settlements:
            _check_money(cost, "actual_cost")
            args += (rid, cost, tokens)
        return await _settled(self._redis.evalsha(_REAP_SETTLED, [self._names.deadlines], args)
                              if settlements else None)

    async def reap(self, *, now: float) -> list[str]:
        released: list[str] = []
        while True:
            reply = await self._redis.evalsha(
                _REAP, keys=[self._key("deadlines")], args=[self._prefix, repr(now), REAP_BATCH]
            )
            released += [rid.decode() for rid in reply[1:]]
            if reply[0] < REAP_BATCH:
                return released

    async def seed(self, name: str, value: int, *, ttl_s: float | None = None, snapshot: str | None = None) -> bool:
        _check_money(value, "value")
        expiry = "" if ttl_s is None else math.ceil(ttl_s * 1000)
        keys = [self._key("s", name), self._key("sx", name), self._key("pc", name)]
        return await self._redis.evalsha(_SEED, keys, [value, expiry, snapshot or ""]) == 1

    async def read(self, names: Sequence[str]) -> dict[str, int | None]:
        if not names:
            return {}
        commands = []
        for name in names:
            commands += [("GET", self._key("s", name)), ("HGET", self._key("r", name), "total")]
        replies = await self._redis.transaction(commands)
        out: dict[str, int | None] = {}
        for i, name in enumerate(names):
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
            keys=[self._key("cb", deployment)],
            args=["1" if ok else "0", repr(now), failure_threshold, repr(window_s), repr(open_s)],
        )

    async def circuits(self, deployments: Sequence[str]) -> dict[str, str]:
        if not deployments:
            return {}
        states = await self._redis.transaction([("HGET", self._key("cb", d), "state") for d in deployments])
        return {d: state.decode() if state else "closed" for d, state in zip(deployments, states, strict=True)}

    async def reservations_outstanding(self) -> int:
        return int(await self._redis.execute("ZCARD", self._names.deadlines))

    async def cooldown_set(self, deployment: str, until: float) -> None:
        await self._redis.execute("HSET", self._key("cooldowns"), deployment, repr(until))

    async def cooldowns_until(self, deployments: Sequence[str], now: float) -> dict[str, float]:
        if not deployments:
            return {}
        untils = await self._redis.execute("HMGET", self._key("cooldowns"), *deployments)
        return {d: float(until) for d, until in zip(deployments, untils, strict=True)
                if until is not None and float(until) > now}

    async def latency_record(self, deployment: str, ms: float) -> None:
        await self._redis.evalsha(_LATENCY, keys=[self._key("lat", deployment)], args=[repr(ms), repr(LATENCY_ALPHA)])

    async def latency_get(self, deployments: Sequence[str]) -> dict[str, float | None]:
        if not deployments:
            return {}
        values = await self._redis.execute("MGET", *(self._key("lat", d) for d in deployments))
        return {d: None if v is None else float(v) for d, v in zip(deployments, values, strict=True)}

    async def cache_get(self, key: str) -> bytes | None:
        return await self._redis.execute("GET", self._names.spread("cache", key))

    async def cache_set(self, key: str, value: bytes, ttl_s: float) -> None:
        await self._redis.execute("SET", self._names.spread("cache", key), value, "PX", math.ceil(ttl_s * 1000))

    async def clear(self) -> None:
        patterns = {_glob_escape(prefix) + "*" for prefix in (self._names.prefix, self._names.spread_prefix)}
        for node in await self._redis.nodes():
            for pattern in patterns:
                await _clear_node(node, pattern)

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


async def _settled(replies: Awaitable[list[int]] | None) -> list[bool]:
    """1: settled now; 2: settled by the reaper already; 3: gone, and charged (settle.lua); 0: gone."""
    return [reply != 0 for reply in await replies] if replies is not None else []
