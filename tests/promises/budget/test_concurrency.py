"""Spend never exceeds a budget, under any concurrency, at any level (DESIGN.md, promise 2).

200 calls are fired at once against a budget that fits 19 worst cases. The fake upstream waits a
little before answering, so the whole burst is in flight together and only the reservations
stand between it and the budget.

With one worker, one call goes first, so that the burst finds the key cached and the counters
rebuilt: SQLite's in-memory test database refuses a read of a table being written instead of
waiting. The two-worker test, on PostgreSQL, fires everything cold, rebuilds included.
"""

from decimal import Decimal

import pytest

from analytics.models import RequestLog
from money import from_micros, to_micros
from tests.fakes.behaviours import Reply
from tests.promises.budget.support import (
    LONG_ANSWER,
    ControlledOpenAI,
    bucket_of,
    burst,
    counters,
    ledger_micros,
    priced_routing,
    reservation_micros,
    reservations_left,
)

CALLS = 200
BUDGET = Decimal("2.00")
LEVELS = {
    "key": {"key_budget": BUDGET},
    "team": {"team_budget": BUDGET},
    "org": {"org_budget": BUDGET},
    "credits": {"credits": BUDGET},
}


@pytest.fixture
def fake(monkeypatch):
    monkeypatch.setenv("FAKE_OPENAI_KEY", "upstream-secret")
    with ControlledOpenAI(answer_delay_s=0.3) as upstream:
        upstream.script(*[Reply(text=LONG_ANSWER)] * (CALLS + 1))
        yield upstream


def check_the_budget_held(gateway_for_counters, tenant, fake, level: str, results) -> None:
    statuses = [status for status, _, _ in results]
    served = statuses.count(200)
    refusals = [body["error"] for status, _, body in results if status == 402]
    cost_per_call = RequestLog.objects.filter(status=200).first().cost
    names = [bucket_of(level, tenant), bucket_of("credits", tenant)]

    # Nothing else happened: every call was served or refused for its budget.
    assert served + len(refusals) == CALLS
    assert {(e["type"], e["code"], e["param"]) for e in refusals} == {("budget_exceeded", "budget_exceeded", level)}
    assert fake.count == served
    # The budget fits 19 worst cases, so no call may be refused before 19 were served; the
    # real costs, lower than the worst case, may let a few more in, never past the budget.
    assert to_micros(BUDGET) // reservation_micros() <= served <= BUDGET // cost_per_call
    assert from_micros(ledger_micros(org=tenant.org)) <= BUDGET
    assert ledger_micros(org=tenant.org) == served * to_micros(cost_per_call)
    assert counters(gateway_for_counters, names) == {name: ledger_micros(org=tenant.org) for name in names}
    assert reservations_left(gateway_for_counters) == []


@pytest.mark.parametrize("level", LEVELS)
def test_a_burst_of_calls_never_spends_past_the_budget(start_gateway, make_tenant, fake, level):
    tenant = make_tenant(**{"credits": Decimal("100.00"), **LEVELS[level]})
    gateway = start_gateway(priced_routing(fake))

    results = burst([gateway], tenant.secret, calls=1) + burst([gateway], tenant.secret, calls=CALLS - 1)

    check_the_budget_held(gateway, tenant, fake, level, results)


@pytest.mark.postgres
@pytest.mark.redis
@pytest.mark.parametrize("level", ["key", "credits"])
def test_two_gateway_workers_sharing_redis_hold_one_budget(start_gateway, make_tenant, fake, level):
    tenant = make_tenant(**{"credits": Decimal("100.00"), **LEVELS[level]})
    routing = priced_routing(fake)
    workers = [start_gateway(routing), start_gateway(routing)]

    results = burst(workers, tenant.secret, calls=CALLS)

    check_the_budget_held(workers[1], tenant, fake, level, results)
