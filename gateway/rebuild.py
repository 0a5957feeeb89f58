"""Budget counters rebuilt from the ledger, for the admissions that find one missing.

The counter store mirrors the request log (DESIGN.md: "the request log is the ledger"). A counter
it lacks (expired, flushed, a Redis restarted empty) is set again from the log's settled spend,
read at a snapshot the store keeps beside it (``analytics.ledger``). A burst of calls that all
find the same counter missing waits for one read of the ledger, not one each.

A read sums the spend rollup and the few rows past it (analytics.selectors), never months of
log rows; the counters one admission lacks (key, team, org, credits, run) are rebuilt at once,
each in its own thread, and a read that takes longer than ``REBUILD_TIMEOUT_S`` is cancelled by
the database: the call is refused (``LedgerUnavailable``) rather than held.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import datetime

from django.db import connection

from analytics.ledger import DATABASE_ERRORS, read_with_snapshot
from analytics.selectors import run_spend_micros, settled_spend_micros
from billing.reservations import LedgerUnavailable, bucket_spend, seed_ttl_s
from counters import CounterStore
from gateway.db import db_read
from gateway.singleflight import shared_run
from keys.models import Team, VirtualKey

# How long one counter's read of the ledger may take (a statement timeout on PostgreSQL, and a
# wait of the same length for its thread).
REBUILD_TIMEOUT_S = 5.0


def settled_micros(name: str, now: datetime) -> int:
    """What the ledger says the counter ``name`` holds: settled spend only."""
    spend = bucket_spend(name, now)
    if spend.level == "run":
        org_id = VirtualKey.objects.values_list("org_id", flat=True).get(pk=spend.owner_id)
        return run_spend_micros(org_id=org_id, key_id=spend.owner_id, run_id=spend.run_id)
    if spend.level == "key":
        org_id = VirtualKey.objects.values_list("org_id", flat=True).get(pk=spend.owner_id)
        return settled_spend_micros(org_id=org_id, since=spend.since, key_id=spend.owner_id)
    if spend.level == "team":
        org_id = Team.objects.values_list("org_id", flat=True).get(pk=spend.owner_id)
        return settled_spend_micros(org_id=org_id, since=spend.since, team_id=spend.owner_id)
    return settled_spend_micros(org_id=spend.owner_id, since=spend.since)


def _bounded() -> None:
    """The rest of this transaction's statements are cancelled past ``REBUILD_TIMEOUT_S``."""
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute(f"SET LOCAL statement_timeout = {int(REBUILD_TIMEOUT_S * 1000)}")


def _read(name: str, now: datetime) -> tuple[int, str]:
    def read() -> int:
        _bounded()
        return settled_micros(name, now)
    return read_with_snapshot(read)


class CounterRebuilds:
    """``billing.reservations.Rebuild`` for one store: rebuilds in flight are shared by name."""

    def __init__(self, store: CounterStore) -> None:
        self.store = store
        self.read = db_read(_read)
        self._running: dict[str, asyncio.Future] = {}

    async def __call__(self, names: Sequence[str], now: datetime) -> None:
        """Rebuilds every counter named, all at once."""
        results = await asyncio.gather(
            *(shared_run(self._running, name, lambda name=name: self._seed(name, now)) for name in names),
            return_exceptions=True)
        for result in results:
            if isinstance(result, (*DATABASE_ERRORS, asyncio.TimeoutError)):
                raise LedgerUnavailable("The ledger cannot be read to rebuild a budget counter; nothing was "
                                        "sent upstream.") from result
        for result in results:
            if isinstance(result, BaseException):
                raise result

    async def _seed(self, name: str, now: datetime) -> None:
        # The statement timeout cancels a slow read; the wait stops one whose connection hangs.
        value, snapshot = await asyncio.wait_for(self.read(name, now), REBUILD_TIMEOUT_S * 2)
        await self.store.seed(name, value, ttl_s=seed_ttl_s(name, now), snapshot=snapshot)
