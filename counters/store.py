"""The interface of the gateway's shared state, ``CounterStore``, and the values it takes and gives.

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
  *snapshot* (made by ``analytics.ledger``, compared by ``seen`` below): ``seed`` keeps the
  snapshot next to the counter (``sx:``), a settle passes the position of the commit that wrote
  its calls' rows, and the cost goes only to counters whose snapshot did not see that commit. A
  cost settled while its counter is missing waits beside it (``pc:``) for the rebuild, which adds
  it unless its read saw the commit: a rebuild that read the ledger before the commit and set the
  counter after the settle still counts the call, once.
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
  (``reap_settled``, analytics.reaper). The same holds for a worker killed between its commit's
  reply and writing its settle (one turn of its event loop at most: nothing is awaited in
  between). A worker killed mid-call stops pushing back its reservations' deadlines; the reaper
  then writes their calls' rows from the ``trail`` each was admitted with.

The mirror can thus only ever fall short by the calls in flight of a worker that died with a
loss, never count a call twice; seeding with a ``ttl_s`` bounds how long such a shortfall lasts.
"""

from __future__ import annotations

import abc
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass, field, replace
from typing import Literal

# Every rate limit is per minute.
WINDOW_S = 60.0
# Weight of a new latency sample: one slow outlier moves the average by a fifth, a lasting
# change shows after a handful of calls.
LATENCY_ALPHA = 0.2
# How long a reservation the reaper settled from its log row stays marked (``reaped:<id>``), so
# that its call's own late settle is not charged again: far longer than a settle can lag its
# commit (it is written in the same turn of the worker's loop).
REAPED_MARK_S = 3600
# After the store lost its state, how long every admission waits for the live workers to put
# their calls in flight back (epoch.lua): several heartbeats, for a loaded machine's slack.
RECOVERY_HOLD_S = 3.0
# How often a worker's heartbeat (``keepalive``) looks for a lost store.
KEEPALIVE_S = 0.5

BudgetParam = Literal["key", "team", "org", "credits", "run"]
AdmitStatus = Literal["ok", "budget", "rate_limited", "missing", "hold", "loop"]
# What claiming an Idempotency-Key found (``CounterStore.idempotency_claim``).
ClaimStatus = Literal["claimed", "pending", "done", "reused"]
# (reservation id, real cost, real tokens, the reservation's bucket names): what ``settle_many``
# takes for each call. The names let a call whose reservation was lost still be charged.
Settle = tuple[str, int, int, Sequence[str]]
RateLimited = Literal["requests", "tokens", "parallel"]


# How long a run's state (its envelope, steps and tool calls asked for) outlives its last call.
RUN_STATE_TTL_S = 7 * 24 * 3600
# A run bucket's limit when the run has no envelope of money (only steps or a loop guard).
NO_LIMIT = 2**53 - 1


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
class RunCheck:
    """The run a call belongs to, when its run has an envelope or a loop guard: the last of the
    call's buckets is the run's (``param`` "run"), and the store keeps beside it the run's state.

    ``envelope``: the spend this call proposes for the run (micro-dollars, None: none); the first
    admission that proposes one sets it, and later ones are held to it whatever they propose.
    ``max_steps``: admissions the run may have (None: no limit). ``loop_limit``: once the same
    tool call has been asked for this many times in the run (``run_tool_calls``), its next
    admission answers ``loop`` (0: no guard)."""

    envelope: int | None
    max_steps: int | None
    loop_limit: int


@dataclass(slots=True)
class RateWindow:
    """What the ``x-ratelimit-*-requests`` / ``-tokens`` headers report: the limit, what is left
    of it now, and the seconds until the window is full again."""

    limit: int
    remaining: int
    reset: float


@dataclass(slots=True)
class ChainCheck:
    """What an admission's chain check found: the links to skip, and those this caller probes.
    Only a probe's outcome changes its circuit, so a success elsewhere needs no ``breaker_record``."""

    skip: set[str]
    probes: set[str]


@dataclass(frozen=True, slots=True)
class OutputFit:
    """An admission that fits the call's output to what its budgets can still pay for: it
    reserves ``base`` (the prompt's worst case, micro-dollars) plus as many output tokens as the
    tightest bucket can pay for at ``price_pico`` (pico-dollars a token: a token's price is a
    fraction of a micro-dollar), at most ``most``; a budget refusal if not even ``fewest`` fit.
    The buckets' own amounts are then unused: every bucket reserves the same."""

    base: int
    price_pico: int
    fewest: int
    most: int

    def amount(self, tokens: int) -> int:
        return self.base + -(-tokens * self.price_pico // 1_000_000)

    def tokens(self, micros: int) -> int:
        """The output tokens ``micros`` pays for after the prompt, at most ``most`` (admit.lua's rule)."""
        if not self.price_pico:
            return self.most
        return min(self.most, (micros - self.base) * 1_000_000 // self.price_pico)


@dataclass(slots=True)
class Admission:
    status: AdmitStatus
    requests: RateWindow | None = None
    tokens: RateWindow | None = None
    # status == "budget": the first level that does not fit; with ``steps``, the run's step count
    # (its limit) is what is used up, not its money. status == "loop": the repeats of the tool
    # call asked for most often in the run.
    param: BudgetParam | None = None
    steps: int | None = None
    repeats: int | None = None
    limit: int | None = None
    remaining: int | None = None
    # status == "missing": counters to rebuild from the ledger (``seed``) before admitting again.
    missing: list[str] = field(default_factory=list)
    # status == "rate_limited", or "hold" (the store is being recovered, see epoch.lua)
    which: RateLimited | None = None
    retry_after: float | None = None
    # status == "ok" and a chain was passed: its check, made right after the reservation.
    chain: ChainCheck | None = None
    # status == "ok": what was reserved in each bucket, and with a fit the output tokens it pays for.
    amount: int | None = None
    output_tokens: int | None = None

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
        fit: OutputFit | None = None,
        run: RunCheck | None = None,
    ) -> Admission:
        """Check the rate limits and reserve ``amount`` in every bucket, or change nothing. With a
        ``fit``, the amount is what the tightest bucket can pay for (``OutputFit``), the same in
        every bucket, and the admission says it and the output tokens it buys.

        The reservation lives until ``settle_many`` or, past its deadline, until ``reap``; its
        deadline is ``now + ttl_s``, pushed back by every ``keepalive`` of this store while it is
        open, so only a dead worker's calls reach it. ``trail``: what the reaper needs to log the
        call should its worker die (``trails``).

        With a ``chain`` (deployments in the order they will be tried), an admitted call also gets
        its check in the same round trip (a refused one takes no probe): the links to skip,
        cooling down, circuit open, or half-open with its one probe taken. A circuit past its open
        period lets this caller probe it (for ``probe_lease_s``) only if it is the first usable
        link.

        After the store lost its state (a flush, a restart), the first admission or heartbeat
        that notices puts this worker's calls in flight back; admissions answer ``hold`` (retry
        after ``retry_after`` seconds) while the other workers put back theirs (epoch.lua).

        With a ``run`` (``RunCheck``), the last bucket is the run's: its limit is the envelope the
        run's first admission set (the one proposed, if none was), and an admission past the run's
        steps (``budget`` with ``steps``) or its loop guard (``loop``) changes nothing either."""

    @abc.abstractmethod
    async def idempotency_claim(self, name: str, fingerprint: str, *,
                                pending_s: float) -> tuple[ClaimStatus, bytes | None]:
        """Claim an idempotency entry for the request of this ``fingerprint``, in one step:
        ``claimed`` (it was free: the caller runs the call, and the claim lives ``pending_s``
        unless kept or dropped), ``pending`` (the same request runs elsewhere), ``done`` with the
        answer kept, or ``reused`` (claimed by another request)."""

    @abc.abstractmethod
    async def idempotency_keep(self, name: str, fingerprint: str, answer: bytes, *, ttl_s: float) -> None:
        """The claimed call's answer, kept for ``ttl_s``: its duplicates get it (``done``)."""

    @abc.abstractmethod
    async def idempotency_drop(self, name: str, fingerprint: str) -> None:
        """Give up a claim with no answer kept (the call failed): the next duplicate runs it."""

    @abc.abstractmethod
    async def run_tool_calls(self, run_bucket: str, signatures: Sequence[str]) -> None:
        """Count the tool calls an answer of the run asked for (each a signature of its name and
        arguments), for the loop guard of the run's next admissions (``RunCheck.loop_limit``)."""

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
    async def circuits(self, deployments: Sequence[str]) -> dict[str, str]:
        """Each deployment's circuit as stored: ``closed``, ``open`` or ``half_open`` (a read for
        ``/metrics``, never the hot path's)."""

    @abc.abstractmethod
    async def reservations_outstanding(self) -> int:
        """How many reservations, of every worker, are not settled yet (for ``/metrics``)."""

    @abc.abstractmethod
    async def cooldown_set(self, deployment: str, until: float) -> None: ...

    @abc.abstractmethod
    async def cooldowns_until(self, deployments: Sequence[str], now: float) -> dict[str, float]:
        """The deployments cooling down at ``now``, each with the moment its cooldown ends."""

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


def seen(snapshot: str | None, position: int | None) -> bool:
    """Whether a read of the ledger at ``snapshot`` saw the commit at ``position`` (None: unknown,
    not seen), as ``analytics.ledger`` writes them: PostgreSQL's ``xmin:xmax:running,...`` and a
    transaction id. ledger.lua applies the same rule inside Redis."""
    if not snapshot or position is None:
        return False
    xmin, xmax, running = snapshot.split(":")
    if position < int(xmin):
        return True
    return position < int(xmax) and str(position) not in running.split(",")


def _check_money(value: int, what: str) -> None:
    # bool is an int too, and a float here would be a pricing bug upstream.
    if type(value) is not int:
        raise TypeError(f"{what} must be int micro-dollars, not {type(value).__name__}")
    if value < 0:
        raise ValueError(f"{what} must not be negative")


def _check_admit(reservation_id: str, buckets: Sequence[Bucket], rate: RateCheck | None,
                 run: RunCheck | None = None) -> None:
    if not reservation_id:
        raise ValueError("reservation_id must not be empty")
    if run is not None and (not buckets or buckets[-1].param != "run"):
        raise ValueError("with a run, the last bucket must be the run's")
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


def _budget_refusal(shown: Admission, bucket: Bucket, counter: int, limit: int | None = None) -> Admission:
    """``limit``: the bucket's limit as the store held it (a run's envelope), if not its own."""
    limit = bucket.limit if limit is None else limit
    return replace(shown, status="budget", param=bucket.param, limit=limit, remaining=max(0, limit - counter))
