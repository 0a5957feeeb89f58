"""The in-process store: the counters of one process, for the embedded default (no ``REDIS_URL``,
one worker). Its steps are those of the Redis store's Lua scripts, done on dicts (each names the
script it follows), and it passes the same contract tests (``tests/counters/test_store.py``).

Over 400 lines on purpose: it is one class whose methods share one lock and one state; split up,
it would no longer read side by side with ``lua/``, script by script.
"""

from __future__ import annotations

import asyncio
import math
import threading
import time
import uuid
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass, field, replace
from typing import Literal

from counters.store import (
    LATENCY_ALPHA,
    REAPED_MARK_S,
    RUN_STATE_TTL_S,
    WINDOW_S,
    Admission,
    Bucket,
    ChainCheck,
    ClaimStatus,
    CounterStore,
    OutputFit,
    RateCheck,
    RateWindow,
    RunCheck,
    Settle,
    _budget_refusal,
    _check_admit,
    _check_money,
    seen,
)

# Slack (seconds) for float rounding: times near 2e9 s carry about 2.4e-7 s of it.
_EPS = 1e-6
# A parallel slot frees when some other call finishes, which nothing can time.
PARALLEL_RETRY_AFTER_S = 1.0
# How long a cost settled while its counter was missing waits for that counter's rebuild
# (ledger.lua's add_settled): far longer than a rebuild's read of the ledger takes.
PENDING_S = 600
# Past this many runs, those whose state has expired are dropped.
MAX_RUNS = 10_000
# Past this many Idempotency-Key entries, the expired ones are dropped.
MAX_IDEMPOTENCY_ENTRIES = 100_000


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
class _RunState:
    """A run's state, as admit.lua and run_tools.lua keep it in ``run:<bucket>``."""

    limit: int | None = None
    steps: int = 0
    tool_calls: dict[str, int] = field(default_factory=dict)
    expires: float = 0.0

    @property
    def repeats(self) -> int:
        return max(self.tool_calls.values(), default=0)


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
        self._runs: dict[str, _RunState] = {}
        # Idempotency entries: name -> (fingerprint, answer or None, expiry on the monotonic clock).
        self._idempotency: dict[str, tuple[str, bytes | None, float]] = {}

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
        fit: OutputFit | None = None,
        run: RunCheck | None = None,
    ) -> Admission:
        _check_admit(reservation_id, buckets, rate, run)
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
                amount = next(iter(self._reservations[reservation_id].amounts.values()), 0)
                return replace(shown, chain=self._skip(chain, now, probe_lease_s) if chain else None, amount=amount,
                               output_tokens=fit.tokens(amount) if fit is not None else None)
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
            limits = {bucket.name: bucket.limit for bucket in buckets}
            run_state = None
            if run is not None:
                # As admit.lua: the loop guard, then the steps, then the envelope the run's first
                # admission set stands for its bucket's limit.
                run_state = self._run_state(buckets[-1].name)
                if run.loop_limit and run_state.repeats >= run.loop_limit:
                    return replace(shown, status="loop", param="run", repeats=run_state.repeats)
                if run.max_steps is not None and run_state.steps >= run.max_steps:
                    return replace(shown, status="budget", param="run", steps=run.max_steps)
                if run_state.limit is not None:
                    limits[buckets[-1].name] = run_state.limit
            counters = {bucket.name: (settled[bucket.name] or 0) + self._reserved_sum(bucket.name)
                        for bucket in buckets}
            amounts = {bucket.name: bucket.amount for bucket in buckets}
            output_tokens = None
            if fit is None:
                for bucket in buckets:
                    if counters[bucket.name] + bucket.amount > limits[bucket.name]:
                        return _budget_refusal(shown, bucket, counters[bucket.name], limits[bucket.name])
            elif buckets:
                # As admit.lua: the tightest bucket decides how much output the call may buy.
                tightest = min(buckets, key=lambda b: limits[b.name] - counters[b.name])
                room = limits[tightest.name] - counters[tightest.name]
                output_tokens = fit.tokens(room)
                if room < fit.base or output_tokens < fit.fewest:
                    return _budget_refusal(shown, tightest, counters[tightest.name], limits[tightest.name])
                amounts = dict.fromkeys(amounts, fit.amount(output_tokens))
                if trail is not None:
                    trail = {**trail, "amount": amounts[tightest.name]}

            if run_state is not None:
                if run_state.limit is None:
                    run_state.limit = run.envelope
                run_state.steps += 1
                run_state.expires = time.monotonic() + RUN_STATE_TTL_S
            for bucket in buckets:
                self._reserved.setdefault(bucket.name, {})[reservation_id] = amounts[bucket.name]
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
                amounts=amounts,
                trail=trail,
            )
            self._open[reservation_id] = _Open(replace(reservation), ttl_s, now + ttl_s / 3,
                                               parallel=bool(rate and rate.max_parallel is not None))
            return replace(
                shown,
                requests=requests.state(moved=True) if requests else None,
                tokens=tokens.state(moved=True) if tokens else None,
                chain=self._skip(chain, now, probe_lease_s) if chain else None,
                amount=amounts[buckets[0].name] if buckets else 0,
                output_tokens=output_tokens,
            )

    def _run_state(self, name: str) -> _RunState:
        now = time.monotonic()
        state = self._runs.get(name)
        if state is None or state.expires <= now:
            if len(self._runs) >= MAX_RUNS:
                # As Redis lets them expire: the runs past their time go.
                self._runs = {run: kept for run, kept in self._runs.items() if kept.expires > now}
            state = self._runs[name] = _RunState(expires=now + RUN_STATE_TTL_S)
        return state

    def _idempotency_entry(self, name: str) -> tuple[str, bytes | None, float] | None:
        entry = self._idempotency.get(name)
        if entry is not None and entry[2] <= time.monotonic():
            del self._idempotency[name]
            return None
        return entry

    async def idempotency_claim(self, name: str, fingerprint: str, *,
                                pending_s: float) -> tuple[ClaimStatus, bytes | None]:
        """See idempotency.lua."""
        with self._lock:
            entry = self._idempotency_entry(name)
            if entry is None:
                now = time.monotonic()
                if len(self._idempotency) >= MAX_IDEMPOTENCY_ENTRIES:
                    self._idempotency = {n: kept for n, kept in self._idempotency.items() if kept[2] > now}
                self._idempotency[name] = (fingerprint, None, now + pending_s)
                return "claimed", None
            if entry[0] != fingerprint:
                return "reused", None
            return ("done", entry[1]) if entry[1] is not None else ("pending", None)

    async def idempotency_keep(self, name: str, fingerprint: str, answer: bytes, *, ttl_s: float) -> None:
        with self._lock:
            entry = self._idempotency_entry(name)
            if entry is not None and entry[0] == fingerprint and entry[1] is None:
                self._idempotency[name] = (fingerprint, answer, time.monotonic() + ttl_s)

    async def idempotency_drop(self, name: str, fingerprint: str) -> None:
        with self._lock:
            entry = self._idempotency_entry(name)
            if entry is not None and entry[0] == fingerprint and entry[1] is None:
                del self._idempotency[name]

    async def run_tool_calls(self, run_bucket: str, signatures: Sequence[str]) -> None:
        """See run_tools.lua."""
        if not signatures:
            return
        with self._lock:
            state = self._run_state(run_bucket)
            for signature in signatures:
                state.tool_calls[signature] = state.tool_calls.get(signature, 0) + 1
            state.expires = time.monotonic() + RUN_STATE_TTL_S

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

    def _skip(self, deployments: Sequence[str], now: float, probe_lease_s: float) -> ChainCheck:
        """See chain.lua."""
        skip: set[str] = set()
        probes: set[str] = set()
        usable_found = False
        for deployment in deployments:
            breaker = self._breakers.get(deployment)
            if self._cooldowns.get(deployment, 0.0) > now:
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

    async def circuits(self, deployments: Sequence[str]) -> dict[str, str]:
        with self._lock:
            return {d: self._breakers[d].state if d in self._breakers else "closed" for d in deployments}

    async def reservations_outstanding(self) -> int:
        with self._lock:
            return len(self._reservations)

    async def cooldown_set(self, deployment: str, until: float) -> None:
        with self._lock:
            self._cooldowns[deployment] = until

    async def cooldowns_until(self, deployments: Sequence[str], now: float) -> dict[str, float]:
        with self._lock:
            return {d: until for d in deployments if (until := self._cooldowns.get(d, 0.0)) > now}

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
