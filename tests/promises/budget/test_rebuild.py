"""Redis can be flushed at any moment: the counters are a mirror of the ledger (the log rows)
and are rebuilt from it, so nothing is lost, nothing counted twice, and the budget still holds.

The flush drops every key of this gateway's store (its own Redis prefix, or the whole
in-process store), exactly what losing Redis does.
"""

import asyncio
import threading
from decimal import Decimal

import pytest

from analytics.models import RequestLog
from counters import MemoryCounterStore, RedisCounterStore
from money import from_micros, to_micros
from tests.fakes.behaviours import Reply
from tests.promises.budget.support import (
    LONG_ANSWER,
    ControlledOpenAI,
    Held,
    bucket_of,
    counters,
    in_background,
    ledger_micros,
    post_chat,
    priced_routing,
    reservation_micros,
    reservations_left,
    wait_until,
)


@pytest.fixture
def fake(monkeypatch):
    monkeypatch.setenv("FAKE_OPENAI_KEY", "upstream-secret")
    with ControlledOpenAI() as upstream:
        yield upstream


def flush(gateway) -> None:
    gateway.on_loop(lambda state: state.store.clear())


def test_counters_flushed_between_calls_are_rebuilt_and_the_budget_still_holds(start_gateway, make_tenant, fake):
    budget = Decimal("0.55")
    tenant = make_tenant(key_budget=budget)
    names = [bucket_of("key", tenant), bucket_of("credits", tenant)]
    gateway = start_gateway(priced_routing(fake))
    fake.script(*[Reply(text=LONG_ANSWER)] * 8)

    statuses = [post_chat(gateway, tenant.secret)[0] for _ in range(3)]
    flush(gateway)
    flushed = counters(gateway, names)
    statuses += [post_chat(gateway, tenant.secret)[0] for _ in range(5)]

    cost = to_micros(RequestLog.objects.filter(status=200).first().cost)
    # Called one after another, call k fits while (k - 1) settled calls plus one worst case do.
    fitting = 1 + (to_micros(budget) - reservation_micros()) // cost
    assert flushed == {name: None for name in names}
    assert statuses == [200] * fitting + [402] * (8 - fitting)
    assert counters(gateway, names) == {name: ledger_micros(org=tenant.org) for name in names}
    assert ledger_micros(org=tenant.org) <= to_micros(budget)


def test_a_flush_while_a_call_is_in_flight_counts_that_call_once(start_gateway, make_tenant, fake):
    tenant = make_tenant(key_budget=Decimal("3.00"))
    names = [bucket_of("key", tenant), bucket_of("credits", tenant)]
    gateway = start_gateway(priced_routing(fake))
    post_chat(gateway, tenant.secret)
    release = Held(released=threading.Event())
    fake.script(release)
    in_flight = in_background(post_chat, gateway, tenant.secret)
    wait_until(lambda: fake.count == 2, what="the held call to reach the upstream")

    flush(gateway)
    # Another call meanwhile rebuilds the counters from the ledger, which lacks the held call.
    rebuilt_by = post_chat(gateway, tenant.secret)
    release.released.set()
    held_status = in_flight()[0]

    assert (rebuilt_by[0], held_status) == (200, 200)
    assert RequestLog.objects.filter(status=200).count() == 3
    assert counters(gateway, names) == {name: ledger_micros(org=tenant.org) for name in names}
    assert reservations_left(gateway) == []


def test_a_flush_while_a_call_is_in_flight_leaves_the_rebuild_to_the_ledger(start_gateway, make_tenant, fake):
    tenant = make_tenant(key_budget=Decimal("3.00"))
    names = [bucket_of("key", tenant), bucket_of("credits", tenant)]
    gateway = start_gateway(priced_routing(fake))
    post_chat(gateway, tenant.secret)
    release = Held(released=threading.Event())
    fake.script(release)
    in_flight = in_background(post_chat, gateway, tenant.secret)
    wait_until(lambda: fake.count == 2, what="the held call to reach the upstream")

    flush(gateway)
    release.released.set()
    held_status = in_flight()[0]
    after_settle = counters(gateway, names)
    next_status = post_chat(gateway, tenant.secret)[0]

    assert (held_status, next_status) == (200, 200)
    # Its settle found nothing to add to: the rebuild read the call's row instead.
    assert after_settle == {name: None for name in names}
    assert counters(gateway, names) == {name: ledger_micros(org=tenant.org) for name in names}
    assert reservations_left(gateway) == []


def test_a_flush_while_calls_are_in_flight_does_not_let_spend_pass_the_budget(start_gateway, make_tenant, fake):
    """The budget fits two reservations, both held by calls in flight when Redis loses
    everything: the reservations come back before a third call is admitted, so it is refused."""
    budget = from_micros(2 * reservation_micros() + reservation_micros() // 2)
    tenant = make_tenant(key_budget=budget)
    names = [bucket_of("key", tenant), bucket_of("credits", tenant)]
    gateway = start_gateway(priced_routing(fake))
    release = Held(released=threading.Event())
    fake.script(release, release, Reply(text=LONG_ANSWER))
    in_flight = [in_background(post_chat, gateway, tenant.secret) for _ in range(2)]
    wait_until(lambda: fake.count == 2, what="both calls to reach the upstream")

    flush(gateway)
    third = post_chat(gateway, tenant.secret)
    release.released.set()
    held_statuses = [join()[0] for join in in_flight]

    assert (third[0], third[2]["error"]["param"], held_statuses) == (402, "key", [200, 200])
    assert fake.count == 2
    assert ledger_micros(org=tenant.org) <= to_micros(budget)
    assert counters(gateway, names) == {name: ledger_micros(org=tenant.org) for name in names}
    assert reservations_left(gateway) == []


def test_after_a_flush_a_call_is_counted_by_the_time_it_is_answered(start_gateway, make_tenant, fake, monkeypatch):
    """Its settle, and the charge of a reservation Redis lost, are one step: nothing of the call
    is still on its way to the counters once its client has the answer. (The charge is slowed
    where it ever was a step of its own, so that it would show.)"""
    tenant = make_tenant(key_budget=Decimal("3.00"))
    names = [bucket_of("key", tenant), bucket_of("credits", tenant)]
    gateway = start_gateway(priced_routing(fake))
    for store_type in (MemoryCounterStore, RedisCounterStore):
        slowed = getattr(store_type, "charge", None)
        monkeypatch.setattr(store_type, "charge", slow(slowed), raising=False)
    post_chat(gateway, tenant.secret)
    release = Held(released=threading.Event())
    fake.script(release)
    in_flight = in_background(post_chat, gateway, tenant.secret)
    wait_until(lambda: fake.count == 2, what="the held call to reach the upstream")

    flush(gateway)
    post_chat(gateway, tenant.secret)
    release.released.set()
    in_flight()

    assert counters(gateway, names) == {name: ledger_micros(org=tenant.org) for name in names}


def slow(charge):
    async def slowly(*args, **kwargs):
        await asyncio.sleep(0.5)
        return await charge(*args, **kwargs)

    return slowly


def test_a_call_settled_while_its_counter_is_being_rebuilt_is_counted_once(start_gateway, make_tenant, fake,
                                                                            monkeypatch):
    """The rebuild read the ledger before the call's row was committed, and sets the counter
    after the call's settle found it missing: the call's cost waits for the rebuild, which adds
    it, its read not having seen the row."""
    tenant = make_tenant(key_budget=Decimal("3.00"))
    names = [bucket_of("key", tenant), bucket_of("credits", tenant)]
    gateway = start_gateway(priced_routing(fake))
    post_chat(gateway, tenant.secret)
    release = Held(released=threading.Event())
    fake.script(release)
    held = in_background(post_chat, gateway, tenant.secret)
    wait_until(lambda: fake.count == 2, what="the held call to reach the upstream")
    read, seed = threading.Event(), threading.Event()
    rebuilds = gateway.app._state.admissions.rebuild
    read_ledger = rebuilds.read

    async def read_then_wait_to_seed(name, now):
        found = await read_ledger(name, now)
        read.set()
        await asyncio.to_thread(seed.wait, 10)
        return found

    monkeypatch.setattr(rebuilds, "read", read_then_wait_to_seed)
    flush(gateway)
    rebuilding = in_background(post_chat, gateway, tenant.secret)
    wait_until(read.is_set, what="the rebuild's read of the ledger")
    release.released.set()
    held_status = held()[0]
    seed.set()
    rebuilt_by = rebuilding()[0]

    assert (held_status, rebuilt_by) == (200, 200)
    assert RequestLog.objects.filter(status=200).count() == 3
    assert counters(gateway, names) == {name: ledger_micros(org=tenant.org) for name in names}
    assert reservations_left(gateway) == []
