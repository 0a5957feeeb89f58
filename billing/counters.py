"""Shared state of the hot path: budget counters, rate-limit windows, circuit breakers,
cooldowns, latency averages and the response cache.

Every gateway worker on every machine shares one Redis (``RedisCounterStore``). Each hot-path
step is one Lua script, so it is atomic across workers and costs one round trip. Without
``REDIS_URL``, ``MemoryCounterStore`` serves the same interface inside one process. Both pass the
same contract tests (``tests/billing/test_counters.py``).

Time is always passed in by the caller as Unix seconds (``time.time()``) rather than read with
``TIME`` inside the scripts: the in-process store and the tests then run on the same clock, and a
few milliseconds of skew between machines do not matter against windows of seconds.

Budget counters are a mirror of the ledger
------------------------------------------
The request log in Postgres is the ledger; Redis can be flushed, restarted empty or replaced by a
lagging replica at any time. So a bucket's counter is kept in two parts:

* ``s:<bucket>``, the *settled* spend: seeded from the ledger (``SET NX``) and raised by the real
  cost of every settled call. Admission never assumes zero for it: a missing counter answers
  ``missing`` and the caller rebuilds it from Postgres.
* ``r:<bucket>``, the *reserved* part: one hash entry per outstanding reservation plus their
  total. A rebuild writes the settled part only, so calls in flight keep their reservations and
  the budget check still counts them.

What can be lost, and what happens then:

* A settled counter alone (it expired, or was rebuilt): outstanding reservations are still in
  ``r:``; their settle adds the real cost to the new counter, unless the rebuild has counted the
  call already. The gateway **commits a call's log row before it settles here**, so a rebuild in
  between read the row. Each commit of log rows has a *position* and each rebuild's read a
  *snapshot* (``analytics.ledger``): ``seed`` keeps the snapshot next to the counter (``sx:``),
  a settle passes the position of the commit that wrote its calls' rows, and the cost goes only
  to counters whose snapshot did not see that commit. A cost settled while its counter is
  missing waits beside it (``pc:``) for the rebuild, which adds it unless its read saw the
  commit: a rebuild that read the ledger before the commit and set the counter after the settle
  still counts the call, once.
* Everything (flush, restart): the reservations in flight would be lost with it, and admitting
  on top of counters rebuilt from the ledger could spend past a budget. So each worker's store
  remembers the reservations it made (``_open``), and Redis keeps an *epoch* (epoch.lua): the
  first admission or heartbeat (``keepalive``, every ``KEEPALIVE_S``) that finds it gone starts a
  *hold* of ``RECOVERY_HOLD_S``, during which every admission waits while each live worker puts
  its own calls in flight back (restore.lua). A settle that finds no reservation all the same (a
  worker that died with the flush) charges the call's cost to its buckets in the same step,
  with the same rules as above. A settle whose reply was lost is sent again, charging nothing
  for a reservation it no longer finds (``charge_missing=False``): the first may have taken.
* A lagging replica after a failover: a consistent earlier state. Reservations it lacks behave
  as after a flush; reservations settled in the lost milliseconds reappear, hold their amounts
  until their deadline, and are then settled by the reaper with the costs of their log rows
  (``reap_settled``, billing.reaper). The same holds for a worker killed between its commit's
  reply and writing its settle (one turn of its event loop at most: nothing is awaited in
  between). A worker killed mid-call stops pushing back its reservations' deadlines; the reaper
  then writes their calls' rows from the ``trail`` each was admitted with.

The mirror can thus only ever fall short by the calls in flight of a worker that died with a
loss, never count a call twice; seeding with a ``ttl_s`` bounds how long such a shortfall lasts.
Redis must evict, if at all, only keys with a TTL (``maxmemory-policy volatile-*``): those are
cache entries, rate windows and seeded counters, each safe to lose; reservations and the epoch
carry no TTL and are never evicted.

Key layout (prefix ``nemo:`` by default)::

    s:<bucket>            string  settled spend, micro-dollars
    sx:<bucket>           string  the ledger snapshot s:<bucket> was rebuilt at, same TTL
    r:<bucket>            hash    res:<id> -> amount of each outstanding reservation, total -> sum
    pc:<bucket>           list    "position:cost" settled while s:<bucket> was missing, for its rebuild
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

Settle and reap find a reservation's keys through its record rather than through ``KEYS``, so
this needs one Redis, not a cluster, which is what the deployment runs.
"""

from __future__ import annotations

import abc
import asyncio
import math
import threading
import time
import uuid
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal, cast

import orjson

from analytics.ledger import seen
from billing.pipelined import PipelinedRedis, Script

# Every rate limit is per minute.
WINDOW_S = 60.0
# Slack (seconds) for float rounding: times near 2e9 s carry about 2.4e-7 s of it.
_EPS = 1e-6
# Weight of a new latency sample: one slow outlier moves the average by a fifth, a lasting
# change shows after a handful of calls.
LATENCY_ALPHA = 0.2
# A parallel slot frees when some other call finishes, which nothing can time.
PARALLEL_RETRY_AFTER_S = 1.0
# Reservations released per reap step, so one step never blocks Redis for long.
REAP_BATCH = 500
# How long a reservation the reaper settled from its log row stays marked (``reaped:<id>``), so
# that its call's own late settle is not charged again: far longer than a settle can lag its
# commit (it is written in the same turn of the worker's loop).
REAPED_MARK_S = 3600
# After the store lost its state, how long every admission waits for the live workers to put
# their calls in flight back (epoch.lua): several heartbeats, for a loaded machine's slack.
RECOVERY_HOLD_S = 3.0
# How long a cost settled while its counter was missing waits for that counter's rebuild
# (ledger.lua's add_settled): far longer than a rebuild's read of the ledger takes.
PENDING_S = 600
# How often a worker's heartbeat (``keepalive``) looks for a lost store.
KEEPALIVE_S = 0.5

BudgetParam = Literal["key", "team", "org", "credits"]
AdmitStatus = Literal["ok", "budget", "rate_limited", "missing", "hold"]
# (reservation id, real cost, real tokens, the reservation's bucket names): what ``settle_many``
# takes for each call. The names let a call whose reservation was lost still be charged.
Settle = tuple[str, int, int, Sequence[str]]
RateLimited = Literal["requests", "tokens", "parallel"]


# The values a call carries through the hot path are plain dataclasses, not frozen ones: a frozen
# dataclass sets each field through object.__setattr__ (4x the cost of its __init__), and every
# call makes a dozen of them, a stream a dozen more.
@dataclass(slots=True)
class Bucket:
    """One budget level of a call. ``name`` includes the period (``b:key:42:2026-11``), so a new
    period is a new counter and nothing is ever reset."""

    name: str
    limit: int
    amount: int
    param: BudgetParam


@dataclass(slots=True)
class RateCheck:
    """The limits of one virtual key; ``None`` means no such limit. ``tokens`` is the call's
    worst case, reserved now and corrected when the call settles."""

    key: str
    rpm: int | None
    tpm: int | None
    max_parallel: int | None
    tokens: int


@dataclass(slots=True)
class RateWindow:
    """What the ``x-ratelimit-*-requests`` / ``-tokens`` headers report: the limit, what is left
    of it now, and the seconds until the window is full again."""

    limit: int
    remaining: int
    reset: float


@dataclass(slots=True)
class ChainCheck:
    """What ``check_chain`` found: the links to skip, and those this caller probes. Only a probe's
    outcome changes its circuit, so a success elsewhere needs no ``breaker_record``."""

    skip: set[str]
    probes: set[str]


@dataclass(slots=True)
class Admission:
    status: AdmitStatus
    requests: RateWindow | None = None
    tokens: RateWindow | None = None
    # status == "budget": the first level that does not fit.
    param: BudgetParam | None = None
    limit: int | None = None
    remaining: int | None = None
    # status == "missing": counters to rebuild from the ledger (``seed``) before admitting again.
    missing: list[str] = field(default_factory=list)
    # status == "rate_limited", or "hold" (the store is being recovered, see epoch.lua)
    which: RateLimited | None = None
    retry_after: float | None = None
    # status == "ok" and a chain was passed: its check, made right after the reservation.
    chain: ChainCheck | None = None

    @property
    def ok(self) -> bool:
        return self.status == "ok"


class CounterStore(abc.ABC):
    """The shared-state interface of the gateway. Every method is one atomic step."""

    @abc.abstractmethod
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
    ) -> Admission:
        """Check the rate limits and reserve ``amount`` in every bucket, or change nothing.

        The reservation lives until ``settle`` or, past its deadline, until ``reap``; its deadline
        is ``now + ttl_s``, pushed back by every ``keepalive`` of this store while it is open, so
        only a dead worker's calls reach it. With a ``chain``, an admitted call also gets its
        ``check_chain`` in the same round trip (and a refused one takes no probe). ``trail``:
        what the reaper needs to log the call should its worker die (``trails``).

        After the store lost its state (a flush, a restart), the first admission or heartbeat
        that notices puts this worker's calls in flight back; admissions answer ``hold`` (retry
        after ``retry_after`` seconds) while the other workers put back theirs (epoch.lua)."""

    @abc.abstractmethod
    async def settle(self, *, reservation_id: str, actual_cost: int, actual_tokens: int,
                     position: int | None = None, names: Sequence[str] = ()) -> bool:
        """``settle_many`` for one call."""

    @abc.abstractmethod
    def settle_many(self, settlements: Sequence[Settle], position: int | None = None, *,
                    charge_missing: bool = True) -> Awaitable[list[bool]]:
        """Replace each reservation by its call's real cost and token count, all in one step, and
        say for each whether its cost is accounted for. ``position``: the commit that wrote the
        calls' log rows (see the module doc).

        True: settled now; or settled by the reaper from its log row already (``reap_settled``:
        nothing changes); or its reservation was gone (lost with the store) and, with
        ``charge_missing``, its cost went to the counters of the buckets named, but for those
        rebuilt from a ledger that held its row. False: its reservation was gone and nothing
        was charged. A settle tried again after its reply was lost passes
        ``charge_missing=False``: the first may have taken.
        The store has the settle before this returns (on Redis: written to the connection), and
        forgets the calls as in flight; awaiting the result waits for the answer."""

    @abc.abstractmethod
    async def reap(self, *, now: float) -> list[str]:
        """Release every reservation past its deadline at cost 0 and return their ids. Each is
        released once, however many reapers run."""

    @abc.abstractmethod
    async def due(self, *, now: float) -> list[str]:
        """The reservations past their deadline (``reap`` would release them)."""

    @abc.abstractmethod
    async def trails(self, reservation_ids: Sequence[str]) -> dict[str, dict]:
        """The ``trail`` each of these reservations was admitted with, for those that are still
        there and have one."""

    @abc.abstractmethod
    async def reap_settled(self, settlements: Sequence[tuple[str, int, int]], position: int | None) -> list[bool]:
        """Settle reservations past their deadline whose calls' log rows are in the ledger
        (committed at ``position``), with their real costs, as ``settle_many`` would (False: gone
        already). Their calls' own settle, should it still come, then reports each settled (True)
        and so is not charged again (``billing.reservations.settle``)."""

    @abc.abstractmethod
    async def keepalive(self, *, now: float) -> None:
        """This worker's heartbeat, every ``KEEPALIVE_S``: notices a store that lost its state
        and puts this worker's calls in flight back, and pushes back their deadlines."""

    @abc.abstractmethod
    def open_reservations(self) -> list[str]:
        """The reservations this store (this worker) made and has not settled yet."""

    @abc.abstractmethod
    async def seed(self, name: str, value: int, *, ttl_s: float | None = None, snapshot: str | None = None) -> bool:
        """Set a missing settled counter from the ledger, read at ``snapshot``; a counter someone
        else seeded first is kept (False). With ``ttl_s`` it expires and is rebuilt from the ledger
        again, which also keeps old periods from piling up."""

    @abc.abstractmethod
    async def read(self, names: Sequence[str]) -> dict[str, int | None]:
        """Each counter as admission sees it (settled + reserved); None when missing."""

    @abc.abstractmethod
    async def reserved_total(self, name: str) -> int:
        """The part of a counter held by outstanding reservations."""

    async def unavailable(self, deployments: Sequence[str], now: float, *, probe_lease_s: float = 30.0) -> set[str]:
        return (await self.check_chain(deployments, now, probe_lease_s=probe_lease_s)).skip

    @abc.abstractmethod
    async def check_chain(self, deployments: Sequence[str], now: float, *, probe_lease_s: float = 30.0) -> ChainCheck:
        """The links of a chain (in the order they will be tried) to skip: cooling down, circuit
        open, or half-open with its one probe taken. A circuit past its open period lets this
        caller probe it (for ``probe_lease_s``) only if it is the first usable link."""

    @abc.abstractmethod
    async def breaker_allow(self, deployment: str, now: float, *, probe_lease_s: float = 30.0) -> bool:
        """The circuit alone: closed, or this caller is its one probe."""

    @abc.abstractmethod
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
        """Open the circuit for ``open_s`` after ``failure_threshold`` failures within
        ``window_s``; the probe's outcome closes it or opens it again."""

    @abc.abstractmethod
    async def cooldown_set(self, deployment: str, until: float) -> None: ...

    @abc.abstractmethod
    async def cooldown_active(self, deployments: Sequence[str], now: float) -> set[str]: ...

    @abc.abstractmethod
    async def latency_record(self, deployment: str, ms: float) -> None: ...

    @abc.abstractmethod
    async def latency_get(self, deployments: Sequence[str]) -> dict[str, float | None]: ...

    @abc.abstractmethod
    async def cache_get(self, key: str) -> bytes | None: ...

    @abc.abstractmethod
    async def cache_set(self, key: str, value: bytes, ttl_s: float) -> None: ...

    @abc.abstractmethod
    async def clear(self) -> None:
        """Drop everything this store holds (tests; an operator forcing a rebuild)."""

    @abc.abstractmethod
    async def close(self) -> None: ...


def counter_store_from_url(url: str | None, *, prefix: str = "nemo:",
                           recovery_hold_s: float = RECOVERY_HOLD_S) -> CounterStore:
    """Redis when a URL is configured, otherwise the in-process store (one worker only)."""
    if url:
        return RedisCounterStore(url, prefix=prefix, recovery_hold_s=recovery_hold_s)
    return MemoryCounterStore()


def _check_money(value: int, what: str) -> None:
    # bool is an int too, and a float here would be a pricing bug upstream.
    if type(value) is not int:
        raise TypeError(f"{what} must be int micro-dollars, not {type(value).__name__}")
    if value < 0:
        raise ValueError(f"{what} must not be negative")


def _check_admit(reservation_id: str, buckets: Sequence[Bucket], rate: RateCheck | None) -> None:
    if not reservation_id:
        raise ValueError("reservation_id must not be empty")
    names = [bucket.name for bucket in buckets]
    if len(set(names)) != len(names):
        raise ValueError(f"bucket names must be unique: {names}")
    for bucket in buckets:
        # Checked inline first: this runs on every call, the messages only on a bug.
        if type(bucket.limit) is not int or type(bucket.amount) is not int or bucket.limit < 0 or bucket.amount < 0:
            _check_money(bucket.limit, f"limit of {bucket.name}")
            _check_money(bucket.amount, f"amount of {bucket.name}")
    if rate is not None:
        for limit in (rate.rpm, rate.tpm, rate.max_parallel):
            if limit is not None and limit < 1:
                raise ValueError("a rate limit must be at least 1 (None means no limit)")
        if rate.tokens < 0:
            raise ValueError("tokens must not be negative")


def _budget_refusal(shown: Admission, bucket: Bucket, counter: int) -> Admission:
    return replace(
        shown, status="budget", param=bucket.param, limit=bucket.limit, remaining=max(0, bucket.limit - counter)
    )


# --------------------------------------------------------------------------------------------
# In-process store
# --------------------------------------------------------------------------------------------


@dataclass(slots=True)
class _Reservation:
    buckets: list[str]
    rate_key: str | None
    tokens: int
    token_interval: float | None
    deadline: float
    amounts: dict[str, int] = field(default_factory=dict)
    trail: dict | None = None


@dataclass(slots=True)
class _Held:
    """A reservation as the worker that made it remembers it, in Redis's terms (``_Open``)."""

    record: bytes
    buckets: tuple[tuple[str, int], ...]
    parallel_key: str
    ttl_s: float
    deadline: float
    renew_at: float


@dataclass(slots=True)
class _Open:
    """A reservation as its worker remembers it, to put it back should the store lose it and to
    push back its deadline while the call runs."""

    reservation: _Reservation
    ttl_s: float
    renew_at: float
    parallel: bool = False


@dataclass(slots=True)
class _Window:
    limit: int
    interval: float
    current: float
    after: float
    now: float

    @property
    def ok(self) -> bool:
        return self.after - self.now <= WINDOW_S + _EPS

    @property
    def retry_after(self) -> float:
        return self.after - WINDOW_S - self.now

    def state(self, *, moved: bool) -> RateWindow:
        tat = self.after if moved else self.current
        remaining = max(0, math.floor((self.now + WINDOW_S - tat + _EPS) / self.interval))
        return RateWindow(self.limit, remaining, tat - self.now)


@dataclass(slots=True)
class _Breaker:
    state: Literal["closed", "open", "half_open"] = "closed"
    until: float = 0.0
    failures: list[float] = field(default_factory=list)


def _gcra(tat: float | None, limit: int, cost: int, now: float) -> _Window:
    """The same window arithmetic as admit.lua, for the in-process store."""
    interval = WINDOW_S / limit
    current = max(tat if tat is not None else now, now)
    return _Window(limit, interval, current, current + cost * interval, now)


class MemoryCounterStore(CounterStore):
    """The embedded store: plain dicts in one process. No method awaits part-way, so each is
    atomic under asyncio; the lock covers callers on other threads (Django's sync views).

    ``clear`` loses the store's state as a flush loses Redis's; what a worker knows of its own
    calls in flight (``_open``, ``_seen_epoch``) is the worker's, not the store's, and survives
    it, so recovery follows the same steps as on Redis (epoch.lua)."""

    def __init__(self, *, recovery_hold_s: float = 0.0) -> None:
        # One process holds every call in flight, and puts them back before it admits again:
        # there is no other worker to wait for (``recovery_hold_s`` is for the contract tests).
        self._lock = threading.Lock()
        self._recovery_hold_s = recovery_hold_s
        self._open: dict[str, _Open] = {}
        self._seen_epoch = ""
        self._reset()

    def _reset(self) -> None:
        self._epoch: str | None = None
        self._hold_until = 0.0
        self._settled: dict[str, int] = {}
        # Expiry of seeded counters and cache entries runs on the monotonic clock, like Redis TTLs.
        self._settled_expires: dict[str, float] = {}
        # The snapshot each counter was rebuilt at (analytics.ledger).
        self._snapshots: dict[str, str] = {}
        # Costs settled while their counter was missing, for its rebuild: (position, cost, until).
        self._pending: dict[str, list[tuple[int, int, float]]] = {}
        self._reserved: dict[str, dict[str, int]] = {}
        self._reservations: dict[str, _Reservation] = {}
        # Reservations the reaper settled from their log rows, until when (reap_settled).
        self._reaped: dict[str, float] = {}
        self._tat: dict[tuple[str, str], float] = {}
        self._in_flight: dict[str, set[str]] = {}
        self._breakers: dict[str, _Breaker] = {}
        self._cooldowns: dict[str, float] = {}
        self._latency: dict[str, float] = {}
        self._cache: dict[str, tuple[float, bytes]] = {}

    def _settled_value(self, name: str) -> int | None:
        expires = self._settled_expires.get(name)
        if expires is not None and expires <= time.monotonic():
            del self._settled[name], self._settled_expires[name]
            self._snapshots.pop(name, None)
        return self._settled.get(name)

    def _add_settled(self, name: str, cost: int, position: int | None) -> None:
        """See ledger.lua."""
        if not cost:
            return
        if self._settled_value(name) is not None:
            if not seen(self._snapshots.get(name), position):
                self._settled[name] += cost
        elif position is not None:
            self._pending.setdefault(name, []).append((position, cost, time.monotonic() + PENDING_S))

    def _reserved_sum(self, name: str) -> int:
        return sum(self._reserved.get(name, {}).values())

    def _lost(self, fresh: str) -> bool:
        """See epoch.lua: whether this worker must put its calls in flight back first."""
        if self._epoch is None:
            self._epoch = fresh
            if not self._seen_epoch:
                self._seen_epoch = fresh
                return False
            self._hold_until = time.monotonic() + self._recovery_hold_s
        elif not self._seen_epoch:
            self._seen_epoch = self._epoch
            return False
        elif self._epoch == self._seen_epoch:
            return False
        elif self._hold_until <= time.monotonic():
            self._hold_until = time.monotonic() + self._recovery_hold_s
        self._restore()
        self._seen_epoch = self._epoch
        return True

    def _restore(self) -> None:
        """See restore.lua."""
        for reservation_id, opened in self._open.items():
            if reservation_id in self._reservations or reservation_id in self._reaped:
                continue
            self._reservations[reservation_id] = replace(opened.reservation)
            for name, amount in opened.reservation.amounts.items():
                self._reserved.setdefault(name, {}).setdefault(reservation_id, amount)
            if opened.parallel:
                self._in_flight.setdefault(opened.reservation.rate_key, set()).add(reservation_id)

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
    ) -> Admission:
        _check_admit(reservation_id, buckets, rate)
        with self._lock:
            self._lost(reservation_id)
            hold = self._hold_until - time.monotonic()
            if hold > 0:
                return Admission("hold", retry_after=hold)
            requests = tokens = None
            if rate is not None and rate.rpm is not None:
                requests = _gcra(self._tat.get((rate.key, "req")), rate.rpm, 1, now)
            if rate is not None and rate.tpm is not None:
                tokens = _gcra(self._tat.get((rate.key, "tok")), rate.tpm, rate.tokens, now)
            # The window state goes back with every answer, for the x-ratelimit-* headers: moved
            # only if the call is in.
            shown = Admission(
                "ok",
                requests=requests.state(moved=False) if requests else None,
                tokens=tokens.state(moved=False) if tokens else None,
            )
            if reservation_id in self._reservations:
                # This very admission, tried again: it is in already.
                return replace(shown, chain=self._skip(chain, now, probe_lease_s, cooldowns=True) if chain else None)
            if requests and not requests.ok:
                return replace(shown, status="rate_limited", which="requests", retry_after=requests.retry_after)
            if tokens and not tokens.ok:
                return replace(shown, status="rate_limited", which="tokens", retry_after=tokens.retry_after)
            in_flight = self._in_flight.get(rate.key, set()) if rate else set()
            if rate and rate.max_parallel is not None and len(in_flight) >= rate.max_parallel:
                return replace(shown, status="rate_limited", which="parallel", retry_after=PARALLEL_RETRY_AFTER_S)

            settled = {bucket.name: self._settled_value(bucket.name) for bucket in buckets}
            missing = [name for name, value in settled.items() if value is None]
            if missing:
                return replace(shown, status="missing", missing=missing)
            for bucket in buckets:
                counter = (settled[bucket.name] or 0) + self._reserved_sum(bucket.name)
                if counter + bucket.amount > bucket.limit:
                    return _budget_refusal(shown, bucket, counter)

            for bucket in buckets:
                self._reserved.setdefault(bucket.name, {})[reservation_id] = bucket.amount
            if rate is not None:
                if requests:
                    self._tat[(rate.key, "req")] = requests.after
                if tokens:
                    self._tat[(rate.key, "tok")] = tokens.after
                if rate.max_parallel is not None:
                    self._in_flight.setdefault(rate.key, set()).add(reservation_id)
            reservation = self._reservations[reservation_id] = _Reservation(
                buckets=[bucket.name for bucket in buckets],
                rate_key=rate.key if rate else None,
                tokens=rate.tokens if rate else 0,
                token_interval=WINDOW_S / rate.tpm if rate and rate.tpm else None,
                deadline=now + ttl_s,
                amounts={bucket.name: bucket.amount for bucket in buckets},
                trail=trail,
            )
            self._open[reservation_id] = _Open(replace(reservation), ttl_s, now + ttl_s / 3,
                                               parallel=bool(rate and rate.max_parallel is not None))
            return replace(
                shown,
                requests=requests.state(moved=True) if requests else None,
                tokens=tokens.state(moved=True) if tokens else None,
                chain=self._skip(chain, now, probe_lease_s, cooldowns=True) if chain else None,
            )

    def _release(self, reservation_id: str, cost: int, tokens: int | None, position: int | None = None) -> None:
        """See release.lua."""
        reservation = self._reservations.pop(reservation_id)
        for name in reservation.buckets:
            entries = self._reserved.get(name, {})
            entries.pop(reservation_id, None)
            if not entries:
                self._reserved.pop(name, None)
            self._add_settled(name, cost, position)
        if reservation.rate_key is not None:
            self._in_flight.get(reservation.rate_key, set()).discard(reservation_id)
            token_key = (reservation.rate_key, "tok")
            if reservation.token_interval and tokens is not None and token_key in self._tat:
                self._tat[token_key] += (tokens - reservation.tokens) * reservation.token_interval

    async def settle(self, *, reservation_id: str, actual_cost: int, actual_tokens: int,
                     position: int | None = None, names: Sequence[str] = ()) -> bool:
        return (await self.settle_many([(reservation_id, actual_cost, actual_tokens, names)], position))[0]

    def _settle(self, settlement: Settle, position: int | None, charge_missing: bool) -> bool:
        """See settle.lua."""
        reservation_id, actual_cost, actual_tokens, names = settlement
        _check_money(actual_cost, "actual_cost")
        self._open.pop(reservation_id, None)
        if reservation_id in self._reservations:
            self._release(reservation_id, actual_cost, actual_tokens, position)
            return True
        if self._reaped.get(reservation_id, 0) > time.monotonic():
            return True
        if not charge_missing or not names:
            return False
        for name in names:
            self._add_settled(name, actual_cost, position)
        return True

    def settle_many(self, settlements: Sequence[Settle], position: int | None = None, *,
                    charge_missing: bool = True) -> Awaitable[list[bool]]:
        """Settled before this returns, like Redis's (its answer is ready at once)."""
        answer = asyncio.get_running_loop().create_future()
        try:
            with self._lock:
                answer.set_result([self._settle(settlement, position, charge_missing) for settlement in settlements])
        except Exception as error:  # noqa: BLE001 - given to whoever awaits the answer, as Redis's would be
            answer.set_exception(error)
        return answer

    async def reap(self, *, now: float) -> list[str]:
        with self._lock:
            due = self._due(now)
            for reservation_id in due:
                self._release(reservation_id, 0, None)
            return due

    async def due(self, *, now: float) -> list[str]:
        with self._lock:
            return self._due(now)

    def _due(self, now: float) -> list[str]:
        return [rid for rid, reservation in self._reservations.items() if reservation.deadline <= now]

    async def trails(self, reservation_ids: Sequence[str]) -> dict[str, dict]:
        with self._lock:
            found = {rid: self._reservations.get(rid) for rid in reservation_ids}
            return {rid: dict(reservation.trail) for rid, reservation in found.items()
                    if reservation is not None and reservation.trail}

    async def reap_settled(self, settlements: Sequence[tuple[str, int, int]], position: int | None) -> list[bool]:
        done = []
        with self._lock:
            now = time.monotonic()
            self._reaped = {rid: until for rid, until in self._reaped.items() if until > now}
            for rid, cost, tokens in settlements:
                _check_money(cost, "actual_cost")
                done.append(rid in self._reservations)
                if done[-1]:
                    self._release(rid, cost, tokens, position)
                    self._reaped[rid] = now + REAPED_MARK_S
            return done

    async def keepalive(self, *, now: float) -> None:
        with self._lock:
            if self._lost(f"keepalive-{uuid.uuid4().hex}"):
                return
            for reservation_id, opened in self._open.items():
                reservation = self._reservations.get(reservation_id)
                if opened.renew_at <= now and reservation is not None:
                    reservation.deadline = opened.reservation.deadline = now + opened.ttl_s
                    opened.renew_at = now + opened.ttl_s / 3

    def open_reservations(self) -> list[str]:
        return list(self._open)

    async def seed(self, name: str, value: int, *, ttl_s: float | None = None, snapshot: str | None = None) -> bool:
        _check_money(value, "value")
        with self._lock:
            if self._settled_value(name) is not None:
                return False
            now = time.monotonic()
            waiting = [cost for position, cost, until in self._pending.pop(name, [])
                       if until > now and not seen(snapshot, position)]
            self._settled[name] = value + sum(waiting)
            if ttl_s is not None:
                self._settled_expires[name] = now + ttl_s
            if snapshot:
                self._snapshots[name] = snapshot
            else:
                self._snapshots.pop(name, None)
            return True

    async def read(self, names: Sequence[str]) -> dict[str, int | None]:
        with self._lock:
            out: dict[str, int | None] = {}
            for name in names:
                settled = self._settled_value(name)
                out[name] = None if settled is None else settled + self._reserved_sum(name)
            return out

    async def reserved_total(self, name: str) -> int:
        with self._lock:
            return self._reserved_sum(name)

    def _skip(self, deployments: Sequence[str], now: float, probe_lease_s: float, *, cooldowns: bool) -> ChainCheck:
        """See unavailable.lua."""
        skip: set[str] = set()
        probes: set[str] = set()
        usable_found = False
        for deployment in deployments:
            breaker = self._breakers.get(deployment)
            if cooldowns and self._cooldowns.get(deployment, 0.0) > now:
                skip.add(deployment)
            elif breaker is None or breaker.state == "closed":
                usable_found = True
            elif now < breaker.until or usable_found:
                skip.add(deployment)
            else:
                breaker.state, breaker.until = "half_open", now + probe_lease_s
                probes.add(deployment)
                usable_found = True
        return ChainCheck(skip=skip, probes=probes)

    async def check_chain(self, deployments: Sequence[str], now: float, *, probe_lease_s: float = 30.0) -> ChainCheck:
        with self._lock:
            return self._skip(deployments, now, probe_lease_s, cooldowns=True)

    async def breaker_allow(self, deployment: str, now: float, *, probe_lease_s: float = 30.0) -> bool:
        with self._lock:
            return not self._skip([deployment], now, probe_lease_s, cooldowns=False).skip

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
        """See breaker_record.lua."""
        with self._lock:
            breaker = self._breakers.get(deployment) or _Breaker()
            if breaker.state == "half_open":
                if ok:
                    del self._breakers[deployment]
                else:
                    breaker.state, breaker.until, breaker.failures = "open", now + open_s, []
                return
            if ok or breaker.state == "open":
                return
            breaker.failures = [t for t in breaker.failures if t > now - window_s] + [now]
            if len(breaker.failures) >= failure_threshold:
                breaker.state, breaker.until, breaker.failures = "open", now + open_s, []
            self._breakers[deployment] = breaker

    async def cooldown_set(self, deployment: str, until: float) -> None:
        with self._lock:
            self._cooldowns[deployment] = until

    async def cooldown_active(self, deployments: Sequence[str], now: float) -> set[str]:
        with self._lock:
            return {d for d in deployments if self._cooldowns.get(d, 0.0) > now}

    async def latency_record(self, deployment: str, ms: float) -> None:
        with self._lock:
            average = self._latency.get(deployment)
            self._latency[deployment] = ms if average is None else average + LATENCY_ALPHA * (ms - average)

    async def latency_get(self, deployments: Sequence[str]) -> dict[str, float | None]:
        with self._lock:
            return {d: self._latency.get(d) for d in deployments}

    async def cache_get(self, key: str) -> bytes | None:
        with self._lock:
            entry = self._cache.get(key)
            if entry is None:
                return None
            if entry[0] <= time.monotonic():
                del self._cache[key]
                return None
            return entry[1]

    async def cache_set(self, key: str, value: bytes, ttl_s: float) -> None:
        with self._lock:
            self._cache[key] = (time.monotonic() + ttl_s, value)

    async def clear(self) -> None:
        with self._lock:
            self._reset()

    async def close(self) -> None:
        return None


# --------------------------------------------------------------------------------------------
# Redis store
# --------------------------------------------------------------------------------------------

_LUA_DIR = Path(__file__).with_name("lua")


def _lua(*names: str) -> str:
    return "\n".join((_LUA_DIR / f"{name}.lua").read_text() for name in names)


_ADMIT = Script(_lua("chain", "epoch", "admit"))
# Where admit.lua takes the epoch its worker last saw.
_EPOCH_ARG = 9
_KEEPALIVE = Script(_lua("epoch", "keepalive"))
_RESTORE = Script(_lua("restore"))
_SETTLE = Script(_lua("ledger", "release", "settle"))
_REAP = Script(_lua("ledger", "release", "reap"))
_REAP_SETTLED = Script(_lua("ledger", "release", "reap_settled"))
_SEED = Script(_lua("ledger", "seed"))
_UNAVAILABLE = Script(_lua("chain", "unavailable"))
_BREAKER_RECORD = Script(_lua("breaker_record"))
_LATENCY = Script(_lua("latency"))


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

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.deadlines = self.key("deadlines")
        self.epoch = self.key("epoch")
        self.hold = self.key("hold")
        self._rates: dict[str, tuple[str, ...]] = {}
        self._buckets: dict[str, tuple[str, ...]] = {}
        self._chains: dict[tuple[str, ...], tuple[str, ...]] = {}

    def key(self, *parts: str) -> str:
        """Any key of the store (the layout is in the module's doc)."""
        return self.prefix + ":".join(parts)

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
        # One pipelined connection per worker (billing/pipelined.py says why).
        self._redis = PipelinedRedis(url)
        self._prefix = prefix
        self._names = _KeyNames(prefix)
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
    ) -> Admission:
        _check_admit(reservation_id, buckets, rate)
        # The hot path's one round trip: key names are built once per worker (_names), and
        # everything below is list building and number formatting.
        rate_keys = self._names.rate(rate.key if rate else "")
        keys = [self._key("res", reservation_id), self._names.deadlines, self._names.epoch, self._names.hold,
                *rate_keys]
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
                reservation_id, self._hold_ms]
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
            self._open[reservation_id] = _Held(packed, tuple((b.name, b.amount) for b in buckets), parallel,
                                               ttl_s, deadline, now + ttl_s / 3)
            return Admission("ok", requests=_window(*reply[1:4]), tokens=_window(*reply[4:7]),
                             chain=_chain_check(reply[8:10]) if chain else None)
        if status in (b"hold", b"lost"):
            return Admission("hold", retry_after=int(reply[7]) / 1000 if status == b"hold" else self._hold_ms / 1000)
        shown = Admission("ok", requests=_window(*reply[1:4]), tokens=_window(*reply[4:7]))
        rest = reply[7:]
        if status == b"rate_limited":
            return replace(shown, status="rate_limited", which=cast(RateLimited, rest[0].decode()),
                           retry_after=float(rest[1]))
        if status == b"missing":
            return replace(shown, status="missing", missing=[buckets[int(i) - 1].name for i in rest])
        return _budget_refusal(shown, buckets[int(rest[0]) - 1], int(rest[1]) + int(rest[2]))

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

    async def settle(self, *, reservation_id: str, actual_cost: int, actual_tokens: int,
                     position: int | None = None, names: Sequence[str] = ()) -> bool:
        return (await self.settle_many([(reservation_id, actual_cost, actual_tokens, names)], position))[0]

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
        found = {rid: orjson.loads(record).get("c") for rid, record in zip(reservation_ids, records, strict=True)
                 if record is not None}
        return {rid: trail for rid, trail in found.items() if trail}

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

    async def reserved_total(self, name: str) -> int:
        return int(await self._redis.execute("HGET", self._key("r", name), "total") or 0)

    async def _skip(
        self, deployments: Sequence[str], now: float, probe_lease_s: float, *, cooldowns: bool
    ) -> ChainCheck:
        if not deployments:
            return ChainCheck(skip=set(), probes=set())
        args = [repr(now), repr(probe_lease_s), "1" if cooldowns else "0", *deployments]
        return _chain_check(await self._redis.evalsha(_UNAVAILABLE, self._names.chain(deployments), args))

    async def check_chain(self, deployments: Sequence[str], now: float, *, probe_lease_s: float = 30.0) -> ChainCheck:
        return await self._skip(deployments, now, probe_lease_s, cooldowns=True)

    async def breaker_allow(self, deployment: str, now: float, *, probe_lease_s: float = 30.0) -> bool:
        return not (await self._skip([deployment], now, probe_lease_s, cooldowns=False)).skip

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

    async def cooldown_set(self, deployment: str, until: float) -> None:
        await self._redis.execute("HSET", self._key("cooldowns"), deployment, repr(until))

    async def cooldown_active(self, deployments: Sequence[str], now: float) -> set[str]:
        if not deployments:
            return set()
        untils = await self._redis.execute("HMGET", self._key("cooldowns"), *deployments)
        return {d for d, until in zip(deployments, untils, strict=True) if until is not None and float(until) > now}

    async def latency_record(self, deployment: str, ms: float) -> None:
        await self._redis.evalsha(_LATENCY, keys=[self._key("lat", deployment)], args=[repr(ms), repr(LATENCY_ALPHA)])

    async def latency_get(self, deployments: Sequence[str]) -> dict[str, float | None]:
        if not deployments:
            return {}
        values = await self._redis.execute("MGET", *(self._key("lat", d) for d in deployments))
        return {d: None if v is None else float(v) for d, v in zip(deployments, values, strict=True)}

    async def cache_get(self, key: str) -> bytes | None:
        return await self._redis.execute("GET", self._key("cache", key))

    async def cache_set(self, key: str, value: bytes, ttl_s: float) -> None:
        await self._redis.execute("SET", self._key("cache", key), value, "PX", math.ceil(ttl_s * 1000))

    async def clear(self) -> None:
        cursor = b"0"
        while True:
            cursor, keys = await self._redis.execute(
                "SCAN", cursor, "MATCH", _glob_escape(self._prefix) + "*", "COUNT", 1000
            )
            if keys:
                await self._redis.execute("UNLINK", *keys)
            if cursor == b"0":
                return

    async def close(self) -> None:
        await self._redis.close()


async def _settled(replies: Awaitable[list[int]] | None) -> list[bool]:
    """1: settled now; 2: settled by the reaper already; 3: gone, and charged (settle.lua); 0: gone."""
    return [reply != 0 for reply in await replies] if replies is not None else []
