"""Budget counters rebuilt from the ledger, for the admissions that find one missing.

The counter store mirrors the request log (DESIGN.md: "the request log is the ledger"). A counter
it lacks (expired, flushed, a Redis restarted empty) is set again from the log's settled spend,
read at a snapshot the store keeps beside it (``analytics.ledger``). A burst of calls that all
find the same counter missing waits for one read of the ledger, not one each.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import datetime

from analytics.ledger import DATABASE_ERRORS, read_with_snapshot
from analytics.selectors import run_spend_micros, settled_spend_micros
from billing.reservations import LedgerUnavailable, bucket_spend, seed_ttl_s
from counters import CounterStore
from gateway.db import db_read
from gateway.singleflight import shared_run
from keys.models import Team, VirtualKey


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


def _read(name: str, now: datetime) -> tuple[int, str]:
    return read_with_snapshot(lambda: settled_micros(name, now))


class CounterRebuilds:
    """``billing.reservations.Rebuild`` for one store: rebuilds in flight are shared by name."""

    def __init__(self, store: CounterStore) -> None:
        self.store = store
        self.read = db_read(_read)
        self._running: dict[str, asyncio.Future] = {}

    async def __call__(self, names: Sequence[str], now: datetime) -> None:
        for name in names:
            try:
                await shared_run(self._running, name, lambda name=name: self._seed(name, now))
            except DATABASE_ERRORS as error:
                raise LedgerUnavailable("The ledger cannot be read to rebuild a budget counter; nothing was "
                                        "sent upstream.") from error

    async def _seed(self, name: str, now: datetime) -> None:
        value, snapshot = await self.read(name, now)
        await self.store.seed(name, value, ttl_s=seed_ttl_s(name, now), snapshot=snapshot)
