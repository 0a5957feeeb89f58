"""The reaper: releases the reservations of calls that died with their gateway worker.

A worker killed mid-call (SIGKILL, out of memory, a machine lost) never settles what it reserved,
and reservations carry no TTL in Redis (so that eviction can never drop one). Each reservation
has a deadline instead, ``RESERVATION_TTL_S`` after its admission; past it, this releases it,
atomically and once however many reapers run (``CounterStore.reap``).

A reservation whose call's log row is in the ledger all the same is settled with that row's
cost (and the position of the commit that wrote it), as its worker would have: the worker died
between its commit and its settle, one turn of its event loop, or a Redis failover lost the
settle. The cost is known, so it counts: budgets do not wait for the counter's next rebuild.
Its call's own settle, should it come after all, is told that the reaper settled it and charges
nothing (``CounterStore.reap_settled``).

Every other reservation is released at cost 0, with no log row, on purpose:

* The dead worker wrote no log row and nobody knows what the call cost: the upstream may have
  billed all of it, part of it or nothing (most deaths come before the first byte). The ledger
  holds known costs only. Charging the worst case would bill the customer for a failure of ours
  that may have cost nothing, and keep budget they paid for out of reach.
* The reaper must not write a row either: a call still alive past its deadline (a very long
  stream) writes its own row, under the same request id, when it finishes. Its settle then
  finds no reservation and adds the real cost to the counters (``billing.reservations.settle``),
  so such a call is still counted exactly once.

So whatever the upstream billed for a call reaped at cost 0 is ours, not the customer's. Every
reaped id is logged at WARNING so that it can be matched against a provider's invoice.

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

from asgiref.sync import sync_to_async
from django.conf import settings
from django.db import connection

from analytics.ledger import ROW_POSITION_SQL, row_position
from analytics.models import RequestLog
from billing.counters import CounterStore, counter_store_from_url
from billing.money import to_micros

logger = logging.getLogger(__name__)

# Request ids looked up in the ledger per query.
LOOKUP_BATCH = 1000


LoggedCalls = Callable[[list[str]], Awaitable[dict[str, "LoggedCall"]]]


@dataclass
class LoggedCall:
    """What the ledger says of a call: its cost, its tokens, the commit that wrote its row."""

    cost_micros: int
    tokens: int
    position: int | None


async def expired_reservations_release(*, store: CounterStore, now: float,
                                       logged: LoggedCalls | None = None) -> list[str]:
    """Releases every reservation of ``store`` whose deadline is ``now`` or earlier and returns
    their ids; a reservation released before (by another reaper) is not returned again. Those
    whose calls ``logged`` finds in the ledger are settled with their real costs, the others
    released at cost 0."""
    settled: list[str] = []
    due = await store.due(now=now) if logged is not None else []
    found = await logged(due) if due else {}
    by_position: dict[int | None, list[str]] = {}
    for reservation_id, call in found.items():
        by_position.setdefault(call.position, []).append(reservation_id)
    for position, ids in by_position.items():
        done = await store.reap_settled([(rid, found[rid].cost_micros, found[rid].tokens) for rid in ids], position)
        for reservation_id, was_settled in zip(ids, done, strict=True):
            if was_settled:
                settled.append(reservation_id)
                logger.warning("settled the stale reservation %s from its log row (cost %d micro-dollars): its "
                               "worker committed the row but never settled", reservation_id,
                               found[reservation_id].cost_micros)
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
            with connection.cursor() as cursor:
                cursor.execute(f"SELECT request_id, cost, prompt_tokens, completion_tokens, {ROW_POSITION_SQL} "
                               f"FROM {RequestLog._meta.db_table} WHERE request_id = ANY(%s)", [ids])
                for rid, cost, prompt, completion, xmin, xmax in cursor.fetchall():
                    found[rid] = LoggedCall(to_micros(cost), prompt + completion, row_position(int(xmin), int(xmax)))
        else:
            # No transaction ids to tell which rebuilds saw the row (analytics.ledger): unknown.
            rows = RequestLog.objects.filter(request_id__in=ids).values_list(
                "request_id", "cost", "prompt_tokens", "completion_tokens")
            for rid, cost, prompt, completion in rows:
                found[rid] = LoggedCall(to_micros(cost), prompt + completion, None)
    return found


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
                                                      logged=sync_to_async(_logged_calls_closing))
        finally:
            await store.close()

    return asyncio.run(run())


def _logged_calls_closing(request_ids: list[str]) -> dict[str, LoggedCall]:
    """``logged_calls`` in a thread of its own, which keeps no connection open."""
    try:
        return logged_calls(request_ids)
    finally:
        connection.close()
