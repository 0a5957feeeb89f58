"""Reserve before the call, settle after it (DESIGN.md, "Stay in budget").

The worst case of a call — every prompt byte a token, plus the full output allowance times
``n``, at the price of the dearest link it may be served by — is reserved atomically against
every budget that applies and the org's credits, together with the key's rate limits, in one
step of the counter store. Nothing is sent upstream unless all of it fits, and a reservation is
never shrunk to squeeze a call in. Settling swaps the reservation for the real cost.

Billing refuses in its own terms (``Refused`` and its kinds below); each client API renders a
refusal in its own shape. A counter the store lacks is rebuilt from the ledger by what the
caller passes in (``Rebuild``): billing reads no request log itself.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import ROUND_CEILING, Decimal

from billing.periods import period_end, period_name, period_start
from counters import NO_LIMIT, Bucket, ChainCheck, CounterStore, OutputFit, RateCheck, RunCheck
from money import from_micros, micros_of_picos, whole_picos

# A reservation's deadline, pushed back every RESERVATION_TTL_S / 3 by its worker's heartbeat
# while the call runs (CounterStore.keepalive): only a dead worker's calls reach it.
RESERVATION_TTL_S = 120
MAX_SEED_ROUNDS = 3
# Through an outage of the counter store, an admission is tried again for this long, from
# STORE_RETRY_S apart up to MAX_STORE_RETRY_S apart.
STORE_WAIT_S = 5.0
STORE_RETRY_S = 0.05
MAX_STORE_RETRY_S = 0.5
# Redis gone (refused, reset, timed out) as the pipelined client reports it.
STORE_ERRORS = (ConnectionError, OSError, asyncio.TimeoutError)
# A counter rebuilt from the ledger lives a day at most, and ends soon after its period: a
# shortfall of the mirror (see counters) does not last, and old periods do not pile up.
SEED_TTL_S = 24 * 3600


class Refused(Exception):
    """A call billing will not admit; nothing was sent upstream."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class BudgetRefused(Refused):
    """The call's worst case does not fit a budget (``param``: its level) or the credits."""

    def __init__(self, message: str, *, param: str) -> None:
        super().__init__(message)
        self.param = param


class RunStepsRefused(BudgetRefused):
    """The run has had all the steps its key allows (``run_max_steps``)."""

    def __init__(self, message: str) -> None:
        super().__init__(message, param="run")


class RunLoopDetected(Refused):
    """The run's answers asked for the same tool call ``loop_limit`` times: its next call is refused."""


class RateLimited(Refused):
    def __init__(self, message: str, *, retry_after: float, headers: dict[str, str]) -> None:
        super().__init__(message)
        self.retry_after = retry_after
        self.headers = headers


class CountersUnavailable(Refused):
    """The counter store could not be reached, or is being recovered, for ``STORE_WAIT_S``."""


class LedgerUnavailable(Refused):
    """A counter had to be rebuilt from the ledger, and the ledger could not be read."""


@dataclass(frozen=True, slots=True)
class RunLimits:
    """What holds a run (``X-Nemo-Run``) in: ``envelope`` the spend it proposes (micro-dollars,
    None: none; the run's first call's stands), ``max_steps`` its calls at most (None: no limit),
    ``loop_limit`` the repeats of one tool call after which it is stopped (0: no guard)."""

    run_id: str
    envelope: int | None
    max_steps: int | None
    loop_limit: int

    @property
    def needed(self) -> bool:
        return self.envelope is not None or self.max_steps is not None or self.loop_limit > 0


@dataclass(slots=True)  # not frozen: see counters.Bucket
class Reservation:
    id: str
    amount_micros: int
    tokens: int
    bucket_names: tuple[str, ...]
    rate_headers: dict[str, str]
    # The chain check made with the admission, when a chain was passed.
    chain: ChainCheck | None = None
    # A call reserved with ``fit_output``: the output tokens (a choice) its reservation pays for.
    output_tokens: int | None = None
    # A call of a run held in by ``RunLimits``: the run's bucket (its state's name in the store).
    run_bucket: str | None = None


def worst_case_micros(*, prompt_tokens: int, output_tokens: int, prices) -> int:
    """The dearest of the links' costs for this many tokens, rounded up to a micro-dollar: in
    whole pico-dollars where every price is a whole number of them, else in Decimal."""
    if not prices:
        raise ValueError("a call's worst case needs the price of at least one link")
    dearest = 0
    for price in prices:
        input_picos, output_picos = whole_picos(_dearest_input(price)), whole_picos(price.output)
        if input_picos is None or output_picos is None:
            prompt, output = Decimal(prompt_tokens), Decimal(output_tokens)
            exact = max(prompt * _dearest_input(p) + output * p.output for p in prices)
            return int(exact.to_integral_value(rounding=ROUND_CEILING))
        dearest = max(dearest, prompt_tokens * input_picos + output_tokens * output_picos)
    return micros_of_picos(dearest)


def _output_picos(price) -> int:
    """A price's output token in whole pico-dollars, rounded up where it has finer digits."""
    picos = whole_picos(price.output)
    return picos if picos is not None else int(price.output.scaleb(6).to_integral_value(rounding=ROUND_CEILING))


def _dearest_input(price) -> Decimal:
    """What a prompt token can cost at most: its input price, or a cache write's where the price
    has one (Claude's prompt cache)."""
    write = getattr(price, "cache_write", None)
    return price.input if write is None else max(price.input, write)


def rate_tokens(*, prompt_bytes: int, output_tokens: int, tpm: int | None) -> int:
    """The tokens a call holds in its key's TPM window until it settles.

    Money is reserved at the provable worst case; tokens at a fair estimate (four bytes a
    token), since settling corrects the window within the same minute. One call never holds
    more than the whole window, or a large one could never run at all.
    """
    estimate = prompt_bytes // 4 + output_tokens
    return min(estimate, tpm) if tpm else estimate


def org_tag(org_id: int) -> str:
    """The hash tag every counter of an org's calls begins with: on a Redis Cluster they share
    one slot, so an admission is one script on one node (counters/redis.py)."""
    return f"{{o{org_id}}}"


def bucket_name(org_id: int, level: str, owner_id: int, period: str, now: datetime) -> str:
    return f"{org_tag(org_id)}b:{level}:{owner_id}:{period}:{period_name(period, now)}"


def credits_bucket_name(org_id: int) -> str:
    return f"{org_tag(org_id)}b:credits:{org_id}"


def run_bucket_name(org_id: int, key_id: int, run_id: str) -> str:
    """A run's counter: runs are the key's (two keys' runs of the same name are two runs)."""
    return f"{org_tag(org_id)}b:run:{key_id}:{run_id}"


def _untagged(name: str) -> str:
    return name.split("}", 1)[1] if name.startswith("{") else name


@dataclass(frozen=True, slots=True)
class BucketSpend:
    """Which settled spend a counter mirrors: the ledger's sum of it is the counter's value.
    ``since`` None: all time (the credits, a run). A run's counter is its key's spend in the run."""

    level: str
    owner_id: int
    since: datetime | None
    run_id: str = ""


def bucket_spend(name: str, now: datetime) -> BucketSpend:
    """What the counter ``name`` (``bucket_name``, ``credits_bucket_name``) holds, at ``now``."""
    name = _untagged(name)
    parts = name.split(":")
    if parts[1] == "credits":
        return BucketSpend("credits", int(parts[2]), None)
    if parts[1] == "run":
        # A run's id may hold colons of its own.
        return BucketSpend("run", int(parts[2]), None, run_id=name.split(":", 3)[3])
    return BucketSpend(parts[1], int(parts[2]), period_start(parts[3], now))


def seed_ttl_s(name: str, now: datetime) -> float:
    """How long a counter rebuilt from the ledger lives (``SEED_TTL_S``)."""
    parts = _untagged(name).split(":")
    end = None if parts[1] in ("credits", "run") else period_end(parts[3], now)
    if end is None:
        return SEED_TTL_S
    # Calls reserved just before the period ended still settle into its counter.
    return min(SEED_TTL_S, (end - now).total_seconds() + RESERVATION_TTL_S)


# Rebuilds the named counters of the store from the ledger (``seed``), as of the given time.
Rebuild = Callable[[Sequence[str], datetime], Awaitable[None]]

_RATE_HEADER_NAMES = {
    kind: (f"x-ratelimit-limit-{kind}", f"x-ratelimit-remaining-{kind}", f"x-ratelimit-reset-{kind}")
    for kind in ("requests", "tokens")
}


def _rate_headers(admission) -> dict[str, str]:
    """The ``x-ratelimit-*`` headers of the contract, for the windows the key has."""
    headers = {}
    for kind, window in (("requests", admission.requests), ("tokens", admission.tokens)):
        if window is not None:
            limit, remaining, reset = _RATE_HEADER_NAMES[kind]
            headers[limit] = str(window.limit)
            headers[remaining] = str(max(window.remaining, 0))
            headers[reset] = f"{math.ceil(window.reset)}s"
    return headers


class Admissions:
    """A worker's admissions: ``reserve`` for each call, against ``store``; ``rebuild`` puts back
    the counters the store lacks.

    It keeps, per key snapshot and minute, the budget levels a call of that key reserves in:
    periods start on a UTC midnight, so a bucket's name is the same all minute long, and a
    reloaded snapshot (new budgets) has a new ``loaded_at``, so it gets its own entry."""

    MAX_LEVELS = 10_000

    def __init__(self, store: CounterStore, *, rebuild: Rebuild) -> None:
        self.store = store
        self.rebuild = rebuild
        # (key id, loaded_at, minute) -> ((bucket name, limit, level) of each budget that applies,
        # then the credits; and the bucket names alone).
        self._levels: dict[tuple[int, float, int], tuple[tuple[tuple[str, int, str], ...], tuple[str, ...]]] = {}

    async def reserve(
        self,
        *,
        reservation_id: str,
        snapshot,
        prices,
        prompt_bytes: int,
        output_tokens: int,
        now: float,
        chain: Sequence[str] = (),
        trail: dict | None = None,
        fit_output: tuple[int, int] | None = None,
        choices: int = 1,
        run: RunLimits | None = None,
    ) -> Reservation:
        """Reserves the call's worst case, or raises a ``Refused``. ``prompt_bytes``: the prompt's
        size, reserved as that many tokens (no tokenizer counts more tokens than bytes).
        ``output_tokens``: the output of a call that names its limit (all ``choices`` of it);
        ``fit_output``: (fewest, most) tokens a choice of a call that names none may write: it gets
        as many as the tightest budget can still pay for, in the same atomic step
        (``Reservation.output_tokens``), a 402 only if not even the fewest fit.
        ``chain``: the deployments the call may be served by, in order, checked in the same round
        trip. ``trail``: what the call's log row says of it, for the reaper to write that row
        should the call's worker die (analytics.reaper). ``run``: the run's envelope, steps and loop
        guard, a level of the same step (``RunLimits``; a 402 with ``param`` run, or
        ``RunLoopDetected``)."""
        fit = None
        if fit_output is not None:
            # The dearest input and the dearest output price, each: never below any link's cost.
            fewest, most = fit_output
            fit = OutputFit(base=worst_case_micros(prompt_tokens=prompt_bytes, output_tokens=0, prices=prices),
                            price_pico=max(map(_output_picos, prices)) * choices, fewest=fewest, most=most)
            output_tokens = most * choices
            amount = fit.amount(fewest)
        else:
            amount = worst_case_micros(prompt_tokens=prompt_bytes, output_tokens=output_tokens, prices=prices)
        levels, names = self._bucket_levels(snapshot, now)
        buckets = [Bucket(name, limit, amount, param) for name, limit, param in levels]
        run_check = run_bucket = None
        if run is not None and run.needed:
            run_bucket = run_bucket_name(snapshot.org_id, snapshot.id, run.run_id)
            buckets.append(Bucket(run_bucket, NO_LIMIT if run.envelope is None else run.envelope, amount, "run"))
            names = (*names, run_bucket)
            run_check = RunCheck(envelope=run.envelope, max_steps=run.max_steps, loop_limit=run.loop_limit)
        tokens = rate_tokens(prompt_bytes=prompt_bytes, output_tokens=output_tokens, tpm=snapshot.tpm_limit)
        rate = None
        if snapshot.rpm_limit or snapshot.tpm_limit or snapshot.max_parallel:
            rate = RateCheck(key=f"{org_tag(snapshot.org_id)}k:{snapshot.id}", rpm=snapshot.rpm_limit,
                             tpm=snapshot.tpm_limit, max_parallel=snapshot.max_parallel, tokens=tokens)
        if trail is not None:
            trail = {**trail, "amount": amount, "org_id": snapshot.org_id, "team_id": snapshot.team_id,
                     "key_id": snapshot.id, "key_prefix": snapshot.prefix, "created": now}
        admission = await self._admit(reservation_id=reservation_id, buckets=buckets, rate=rate, now=now,
                                      chain=chain, trail=trail, fit=fit, run=run_check)
        headers = _rate_headers(admission)
        if admission.status == "loop":
            raise RunLoopDetected(f"This run's answers asked for the same tool call {admission.repeats} times (the "
                                  f"key's loop_limit is {run.loop_limit}): it is stopped; nothing was sent upstream.")
        if admission.steps is not None:
            raise RunStepsRefused(f"This run has made its {admission.steps} calls, the most its key allows "
                                  "(run_max_steps): it is stopped; nothing was sent upstream.")
        if admission.status == "budget":
            limit, remaining = from_micros(admission.limit), from_micros(max(admission.remaining, 0))
            what = {"credits": "credit balance", "run": "run's envelope"}.get(admission.param,
                                                                              f"{admission.param} budget")
            raise BudgetRefused(
                f"This call may cost up to ${from_micros(amount)}"
                f"{f' (with {fit.fewest} output tokens, the fewest a call is sent with)' if fit else ''}, "
                f"which does not fit the {what}: limit ${limit}, ${remaining} left. "
                f"{'Shorten the prompt' if fit else 'Lower max_tokens'} or raise the budget.",
                param=admission.param,
            )
        if admission.status == "rate_limited":
            raise RateLimited(f"Rate limit reached ({admission.which}); retry after {admission.retry_after:.0f}s.",
                              retry_after=admission.retry_after, headers=headers)
        if admission.status != "ok":
            raise RuntimeError(f"the counter store kept answering {admission.status!r}")
        return Reservation(id=reservation_id, amount_micros=admission.amount, tokens=tokens,
                           bucket_names=names, rate_headers=headers, chain=admission.chain,
                           output_tokens=admission.output_tokens, run_bucket=run_bucket)

    def _bucket_levels(self, snapshot, now: float) -> tuple[tuple[tuple[str, int, str], ...], tuple[str, ...]]:
        cache_key = (snapshot.id, snapshot.loaded_at, int(now // 60))
        cached = self._levels.get(cache_key)
        if cached is None:
            moment = datetime.fromtimestamp(now, UTC)
            levels = (
                *((bucket_name(snapshot.org_id, b.level, b.owner_id, b.period, moment), b.limit_micros, b.level)
                  for b in snapshot.budgets),
                (credits_bucket_name(snapshot.org_id), snapshot.credits_micros, "credits"),
            )
            if len(self._levels) >= self.MAX_LEVELS:
                self._levels.clear()
            cached = self._levels[cache_key] = (levels, tuple(name for name, _, _ in levels))
        return cached

    async def _admit(self, *, reservation_id: str, buckets: list[Bucket], rate: RateCheck | None,
                     now: float, chain: Sequence[str], trail: dict | None, fit: OutputFit | None,
                     run: RunCheck | None):
        """The store's admission, after the counters it lacks are rebuilt from the ledger, once a
        recovery's hold is over (counters/lua/epoch.lua), and through a short outage of the store:
        a Redis restarting for a second costs the call a second, not an error. Past
        ``STORE_WAIT_S`` the call is refused before anything is sent upstream."""
        give_up = time.monotonic() + STORE_WAIT_S
        backoff = STORE_RETRY_S
        rebuilds = 0
        while True:
            try:
                admission = await self.store.admit(reservation_id=reservation_id, buckets=buckets, rate=rate,
                                                   now=now, ttl_s=RESERVATION_TTL_S, chain=chain, trail=trail,
                                                   fit=fit, run=run)
                if admission.status == "missing" and rebuilds < MAX_SEED_ROUNDS:
                    await self.rebuild(admission.missing, datetime.fromtimestamp(now, UTC))
                    rebuilds += 1
                    continue
            except STORE_ERRORS as error:
                # The admission or a rebuild's seed met Redis away.
                if time.monotonic() + backoff > give_up:
                    raise CountersUnavailable("The gateway's counters cannot be reached; nothing was sent "
                                              "upstream.") from error
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, MAX_STORE_RETRY_S)
                continue
            if admission.status != "hold":
                return admission
            wait = min(admission.retry_after, max(0.0, give_up - time.monotonic()))
            if wait <= 0:
                raise CountersUnavailable("The gateway's counters are being recovered; nothing was sent upstream.")
            await asyncio.sleep(wait)


@dataclass(slots=True)
class Settlement:
    """A finished call's real cost and tokens, to swap for its reservation."""

    reservation: Reservation
    cost_micros: int
    tokens: int


def settle(store: CounterStore, settlements: Sequence[Settlement], position: int | None, *,
           charge_missing: bool = True) -> Awaitable[list[bool]]:
    """Swaps each reservation for its call's real cost, all in one round trip. Runs once the
    calls' log rows are committed, at ``position`` (None: they could not be): a counter rebuilt
    from the ledger meanwhile already holds them and is left as it is, and a call whose
    reservation Redis lost is charged in the same step (see counters). The store has the
    settle when this returns (on Redis, it is written); awaiting the result waits for its reply.
    ``charge_missing``: False for a settle tried again after its reply was lost."""
    return store.settle_many(
        [(s.reservation.id, s.cost_micros, s.tokens, s.reservation.bucket_names) for s in settlements],
        position, charge_missing=charge_missing)
