"""The reaper: settles the reservations of calls that died with their gateway worker.

A worker killed mid-call (SIGKILL, out of memory, a machine lost) never settles what it reserved,
and reservations carry no TTL in Redis (so that eviction can never drop one). Each reservation
has a deadline instead, ``RESERVATION_TTL_S`` after its admission, which its worker pushes back
while the call runs (``CounterStore.keepalive``); past it, the worker is gone, and this settles it,
atomically and once however many reapers run.

Every call that reached an upstream leaves a row in the ledger, even one whose worker died:

* A call whose row is in the ledger all the same is settled with that row's cost (and the
  position of the commit that wrote it), as its worker would have: the worker died between its
  commit and its settle, or a Redis failover lost the settle.
* A call whose worker died before its row was written gets a row from the reaper, out of what it
  was admitted with (its ``trail``: org, key, model, run, when): status 500, one attempt whose
  outcome is ``worker_lost``, charged what it reserved. Nobody knows what the upstream used, and
  most deaths come mid-call: the reservation is the cost the call was allowed, so nothing served
  is free and the trail has no gap. Each such row is logged at WARNING for matching against a
  provider's invoice.
* Either way the call's own late settle, should it come (a worker that was only frozen), is told
  it was settled and charges nothing (``CounterStore.reap_settled``); its own row, should it come,
  finds the reaper's in place and is not written twice.

A reservation with no trail (made before trails existed) is released at cost 0 with no row.

The reaper lives in analytics because its work is the trail: it reads the ledger and writes the
rows a dead worker never did. Of the counter store it needs only the reaping calls
(``due``, ``trails``, ``reap_settled``, ``reap``); the settling itself is the store's.

Without Redis the counters live inside the gateway process: a dead worker took its reservations
with it, and a live one settles its own. A separate process has nothing to reap, so the reaper
does nothing there.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from asgiref.sync import sync_to_async
from django.conf import settings
from django.db import connection

from analytics.ledger import ROW_POSITION_SQL, row_position
from analytics.models import RequestLog
from analytics.partitions import request_id_window
from counters import CounterStore, counter_store_from_url
from money import from_micros, to_micros

logger = logging.getLogger(__name__)

# Request ids looked up in the ledger per query.
LOOKUP_BATCH = 1000


LoggedCalls = Callable[[list[str]], Awaitable[dict[str, "LoggedCall"]]]
LostCalls = Callable[[dict[str, dict], float], Awaitable[dict[str, "LoggedCall"]]]

WORKER_LOST = "worker_lost"
WORKER_LOST_ERROR = ("The gateway worker serving this call died before it finished: it is charged what it "
                     "reserved, since what the upstream used is unknown.")


@dataclass
class LoggedCall:
    """What the ledger says of a call: its cost, its tokens, the commit that wrote its row."""

    cost_micros: int
    tokens: int
    position: int | None


async def expired_reservations_release(*, store: CounterStore, now: float, logged: LoggedCalls | None = None,
                                       write_lost: LostCalls | None = None) -> list[str]:
    """Settles every reservation of ``store`` whose deadline is ``now`` or earlier and returns
    their ids; a reservation settled before (by another reaper) is not returned again. Those
    whose calls ``logged`` finds in the ledger are settled with their real costs; those with a
    trail get their row from ``write_lost`` and are settled at what they reserved; the others
    are released at cost 0."""
    settled: list[str] = []
    due = await store.due(now=now) if logged is not None else []
    found = await logged(due) if due else {}
    unlogged = [rid for rid in due if rid not in found]
    trails = await store.trails(unlogged) if unlogged and write_lost is not None else {}
    if trails:
        found.update(await write_lost(trails, now))
    by_position: dict[int | None, list[str]] = {}
    for reservation_id, call in found.items():
        by_position.setdefault(call.position, []).append(reservation_id)
    for position, ids in by_position.items():
        done = await store.reap_settled([(rid, found[rid].cost_micros, found[rid].tokens) for rid in ids], position)
        for reservation_id, was_settled in zip(ids, done, strict=True):
            if was_settled:
                settled.append(reservation_id)
                how = "logged it for its dead worker and settled it at its reservation" if reservation_id in trails \
                    else "settled it from its log row: its worker never did"
                logger.warning("stale reservation %s (%d micro-dollars): %s", reservation_id,
                               found[reservation_id].cost_micros, how)
    released = await store.reap(now=now)
    for reservation_id in released:
        logger.warning("released the stale reservation %s: its call never settled (worker died?)",
                       reservation_id)
    return settled + released


def logged_calls(request_ids: list[str]) -> dict[str, LoggedCall]:
    """The ledger's rows of these calls, by request id (a reservation's id is its call's)."""
    found: dict[str, LoggedCall] = {}
    for start in range(0, len(request_ids), LOOKUP_BATCH):
        ids = request_ids[start:start + LOOKUP_BATCH]
        if connection.vendor == "postgresql":
            windows = [request_id_window(rid) for rid in ids]
            if all(windows):
                found.update(_logged_on_postgres(ids, (min(w[0] for w in windows), max(w[1] for w in windows))))
            # Ids of the older shape, and those not in their window (an older id that looks like
            # a newer one), are looked for in every month.
            missing = [rid for rid in ids if rid not in found]
            if missing:
                found.update(_logged_on_postgres(missing, None))
        else:
            # No transaction ids to tell which rebuilds saw the row (analytics.ledger): unknown.
            rows = RequestLog.objects.filter(request_id__in=ids).values_list(
                "request_id", "cost", "prompt_tokens", "completion_tokens")
            for rid, cost, prompt, completion in rows:
                found[rid] = LoggedCall(to_micros(cost), prompt + completion, None)
    return found


def _logged_on_postgres(ids: list[str], window: tuple[datetime, datetime] | None) -> dict[str, LoggedCall]:
    """The rows of these ids, with their positions; within ``window`` of ``created`` if given
    (PostgreSQL then reads only its months' partitions)."""
    within = " AND created BETWEEN %s AND %s" if window else ""
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT request_id, cost, prompt_tokens, completion_tokens, {ROW_POSITION_SQL} "
                       f"FROM {RequestLog._meta.db_table} WHERE request_id = ANY(%s){within}", [ids, *(window or ())])
        return {rid: LoggedCall(to_micros(cost), prompt + completion, row_position(int(xmin), int(xmax)))
                for rid, cost, prompt, completion, xmin, xmax in cursor.fetchall()}


def lost_calls_log(trails: dict[str, dict], now: float) -> dict[str, LoggedCall]:
    """Writes the row of each call whose worker died before writing it (its ``trail`` says what
    the call was), charged what it reserved; returns what the ledger then holds of them. A row
    written meanwhile (another reaper, the call itself) is kept as it is."""
    rows = []
    for request_id, trail in trails.items():
        created = datetime.fromtimestamp(float(trail["created"]), UTC)
        deployments = trail.get("deployments") or [""]
        rows.append(RequestLog(
            request_id=request_id, created=created, org_id=trail["org_id"], team_id=trail.get("team_id"),
            key_id=trail.get("key_id"), key_prefix=trail.get("key_prefix", ""), run_id=trail.get("run_id", ""),
            endpoint=trail.get("endpoint", "chat.completions"),
            model=trail.get("model", ""), status=500, error=WORKER_LOST_ERROR,
            attempts=[{"deployment": deployments[0], "outcome": WORKER_LOST, "latency_ms": 0}],
            stream=bool(trail.get("stream")), latency_ms=max(0, int((now - float(trail["created"])) * 1000)),
            cost=from_micros(int(trail["amount"])),
        ))
    RequestLog.objects.bulk_create(rows, ignore_conflicts=True)
    return logged_calls(list(trails))


def reservations_reap(*, now: float | None = None) -> list[str]:
    """Releases the stale reservations in the shared (Redis) counter store; ``now`` defaults to
    the clock. A no-op without ``REDIS_URL`` (see the module doc). Synchronous: runs its own
    event loop, for Celery."""
    if not settings.REDIS_URL:
        return []
    moment = time.time() if now is None else now

    async def run() -> list[str]:
        store = counter_store_from_url(settings.REDIS_URL, prefix=settings.NEMO_REDIS_PREFIX)
        try:
            return await expired_reservations_release(store=store, now=moment,
                                                      logged=sync_to_async(_closing(logged_calls)),
                                                      write_lost=sync_to_async(_closing(lost_calls_log)))
        finally:
            await store.close()

    return asyncio.run(run())


def _closing(read: Callable) -> Callable:
    """``read`` in a thread of its own, which keeps no connection open."""

    def run(*args):
        try:
            return read(*args)
        finally:
            connection.close()

    return run
