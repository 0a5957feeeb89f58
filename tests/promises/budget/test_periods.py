"""Budget periods roll over on UTC calendar boundaries with no reset job: a counter's name
carries its period, so a new period is a new counter, rebuilt from that period's log rows."""

import asyncio
import threading
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
import redis
from django.conf import settings
from django.utils import timezone

from analytics.models import RequestLog
from billing.periods import period_end, period_start
from billing.reservations import RESERVATION_TTL_S, Admissions, BudgetRefused
from counters import counter_store_from_url
from gateway.auth import KeyCache
from gateway.config import Price
from gateway.rebuild import CounterRebuilds
from money import from_micros
from tests.promises.budget.support import (
    INPUT_PRICE,
    MAX_TOKENS,
    OUTPUT_PRICE,
    ControlledOpenAI,
    Held,
    bucket_of,
    in_background,
    post_chat,
    priced_routing,
    reservation_micros,
    wait_until,
)


@pytest.fixture
def fake(monkeypatch):
    monkeypatch.setenv("FAKE_OPENAI_KEY", "upstream-secret")
    with ControlledOpenAI() as upstream:
        yield upstream


def log_spend(tenant, *, cost: Decimal, created: datetime) -> None:
    """A settled call in the ledger, at a moment of the test's choosing."""
    RequestLog.objects.create(request_id=f"req_{uuid.uuid4().hex}", org=tenant.org, key=tenant.key,
                              key_prefix=tenant.key.prefix, model="gpt-4o", status=200, cost=cost,
                              created=created)


@pytest.mark.parametrize("period", ["daily", "weekly", "monthly"])
def test_spend_of_the_previous_period_does_not_count_against_this_one(start_gateway, make_tenant, fake, period):
    budget = Decimal("1.00")
    tenant = make_tenant(credits=Decimal("100.00"), key_budget=budget, period=period)
    now = timezone.now()
    log_spend(tenant, cost=Decimal("50.00"), created=period_start(period, now) - timedelta(seconds=1))
    # This period's spend leaves room for exactly one worst case.
    log_spend(tenant, cost=budget - from_micros(reservation_micros()), created=now)
    gateway = start_gateway(priced_routing(fake))

    statuses = [post_chat(gateway, tenant.secret)[0] for _ in range(2)]

    assert statuses == [200, 402]
    assert fake.count == 1


def test_a_call_is_logged_in_the_period_it_was_reserved_in(start_gateway, make_tenant, fake):
    tenant = make_tenant()
    gateway = start_gateway(priced_routing(fake))
    held = Held(released=threading.Event())
    fake.script(held)
    in_flight = in_background(post_chat, gateway, tenant.secret)
    wait_until(lambda: fake.count == 1, what="the call to reach the upstream")
    reserved_before = timezone.now()

    held.released.set()
    in_flight()

    # A call running across midnight holds and settles its cost in the counter of the day it
    # started. Its row must be of that day too, or the next day's counter, rebuilt from the
    # rows, would count it where it was never reserved.
    assert RequestLog.objects.get().created < reserved_before


async def _reserve_all(store, snapshot, moments: list[float]) -> list[str]:
    """Reserves one call at each moment; gives each one's key counter, or the refused level."""
    price = Price(input=INPUT_PRICE, cached_input=INPUT_PRICE, output=OUTPUT_PRICE)
    admissions = Admissions(store, rebuild=CounterRebuilds(store))
    outcomes = []
    for moment in moments:
        try:
            reservation = await admissions.reserve(reservation_id=uuid.uuid4().hex, snapshot=snapshot, prices=[price],
                                                   prompt_bytes=100, output_tokens=MAX_TOKENS, now=moment)
            outcomes.append(reservation.bucket_names[0])
        except BudgetRefused as refused:
            outcomes.append(f"402 {refused.param}")
    return outcomes


def test_a_budget_exhausted_yesterday_lets_calls_through_today(make_tenant, redis_prefix):
    now = datetime.now(UTC)
    today_start = period_start("daily", now)
    yesterday = (today_start - timedelta(seconds=2)).timestamp()
    one_call = reservation_micros(b"x" * 100)
    tenant = make_tenant(key_budget=from_micros(2 * one_call), period="daily")

    async def run() -> list[str]:
        store = counter_store_from_url(settings.REDIS_URL, prefix=redis_prefix)
        snapshot = await KeyCache().authenticate(f"Bearer {tenant.secret}")
        try:
            return await _reserve_all(store, snapshot, [yesterday] * 3 + [now.timestamp()] * 2 + [yesterday])
        finally:
            await store.clear()
            await store.close()

    outcomes = asyncio.run(run())

    today_counter = bucket_of("key", tenant, period="daily", now=now)
    yesterday_counter = bucket_of("key", tenant, period="daily", now=today_start - timedelta(seconds=2))
    assert today_counter != yesterday_counter
    assert outcomes == [yesterday_counter, yesterday_counter, "402 key", today_counter, today_counter, "402 key"]


@pytest.mark.redis
def test_a_rebuilt_counter_expires_soon_after_its_period(start_gateway, make_tenant, fake, redis_prefix):
    tenant = make_tenant(key_budget=Decimal("5.00"), period="daily")
    gateway = start_gateway(priced_routing(fake))
    called_at = datetime.now(UTC)

    post_chat(gateway, tenant.secret)

    client = redis.Redis.from_url(settings.REDIS_URL)
    ttl_s = client.pttl(f"{redis_prefix}s:{bucket_of('key', tenant, period='daily', now=called_at)}") / 1000
    client.close()
    # Until the day is over and its last calls have settled: then the next day's counter takes over.
    assert 0 < ttl_s <= (period_end("daily", called_at) - called_at).total_seconds() + RESERVATION_TTL_S
