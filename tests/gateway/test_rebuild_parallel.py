"""The counters one admission lacks are rebuilt from the ledger all at once, and a read of the
ledger that does not come back is cut short: the call is refused, not held."""

import asyncio
import time
from datetime import UTC, datetime
from decimal import Decimal

import pytest

from billing.reservations import LedgerUnavailable, bucket_name, credits_bucket_name
from counters import MemoryCounterStore
from gateway import rebuild
from gateway.rebuild import CounterRebuilds
from money import to_micros
from tests.analytics.factories import make_key, make_log

NOW = datetime(2026, 12, 3, 12, tzinfo=UTC)


def test_the_missing_counters_are_read_at_once():
    store = MemoryCounterStore()
    rebuilds = CounterRebuilds(store)
    running, most = 0, 0

    async def slow_read(name, now):
        nonlocal running, most
        running += 1
        most = max(most, running)
        await asyncio.sleep(0.2)
        running -= 1
        return 7, "1:1:"

    rebuilds.read = slow_read
    names = [credits_bucket_name(1), bucket_name(1, "org", 1, "none", NOW), bucket_name(1, "key", 2, "daily", NOW)]
    asyncio.run(rebuilds(names, NOW))
    assert most == len(names)


def test_a_read_that_does_not_come_back_refuses_the_call(monkeypatch):
    monkeypatch.setattr(rebuild, "REBUILD_TIMEOUT_S", 0.1)
    rebuilds = CounterRebuilds(MemoryCounterStore())

    async def hung_read(name, now):
        await asyncio.sleep(60)

    rebuilds.read = hung_read
    started = time.monotonic()
    with pytest.raises(LedgerUnavailable):
        asyncio.run(rebuilds([credits_bucket_name(1)], NOW))
    assert time.monotonic() - started < 30


@pytest.mark.django_db(transaction=True)
def test_a_rebuild_reads_the_ledger_in_its_own_bounded_transaction(org):
    key = make_key(org)
    for cost in ("0.25", "0.125"):
        make_log(org, key, cost=Decimal(cost), created=NOW)
    value, snapshot = rebuild._read(credits_bucket_name(org.pk), NOW)
    assert value == to_micros(Decimal("0.375"))
    assert snapshot.count(":") == 2
