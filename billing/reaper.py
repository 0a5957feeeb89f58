"""The reaper: releases the reservations of calls that died with their gateway worker.

A worker killed mid-call (SIGKILL, out of memory, a machine lost) never settles what it reserved,
and reservations carry no TTL in Redis (so that eviction can never drop one). Each reservation
has a deadline instead, ``RESERVATION_TTL_S`` after its admission; past it, this releases it,
atomically and once however many reapers run (``CounterStore.reap``).

Released at cost 0, with no log row, on purpose:

* The dead worker wrote no log row and nobody knows what the call cost: the upstream may have
  billed all of it, part of it or nothing (most deaths come before the first byte). The ledger
  holds known costs only. Charging the worst case would bill the customer for a failure of ours
  that may have cost nothing, and keep budget they paid for out of reach.
* The reaper must not write a row either: a call still alive past its deadline (a very long
  stream) writes its own row, under the same request id, when it finishes. Its settle then
  finds no reservation and adds the real cost to the counters (``billing.reservations.settle``),
  so such a call is still counted exactly once.

So whatever the upstream billed for a reaped call is ours, not the customer's. Every reaped id
is logged at WARNING so that it can be matched against a provider's invoice. (A worker killed
between its commit's reply and writing the settle, one turn of its event loop at most, leaves a
row: that cost is in the ledger, and missing only from Redis's mirror until the counter is next
rebuilt.)

Without Redis the counters live inside the gateway process: a dead worker took its reservations
with it, and a live one settles its own. A separate process has nothing to reap, so the reaper
does nothing there.
"""

from __future__ import annotations

import asyncio
import logging
import time

from django.conf import settings

from billing.counters import CounterStore, counter_store_from_url

logger = logging.getLogger(__name__)


async def expired_reservations_release(*, store: CounterStore, now: float) -> list[str]:
    """Releases at cost 0 every reservation of ``store`` whose deadline is ``now`` or earlier and
    returns their ids; a reservation released before (by another reaper) is not returned again."""
    released = await store.reap(now=now)
    for reservation_id in released:
        logger.warning("released the stale reservation %s: its call never settled (worker died?)",
                       reservation_id)
    return released


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
            return await expired_reservations_release(store=store, now=moment)
        finally:
            await store.close()

    return asyncio.run(run())
