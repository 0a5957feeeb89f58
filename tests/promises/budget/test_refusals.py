"""A call that does not fit gets a 402 in the contract's shape, naming the level and saying the
limit and what is left, before anything is sent upstream."""

from decimal import Decimal

import pytest

from analytics.models import RequestLog
from money import from_micros, to_micros
from tests.fakes.behaviours import Reply
from tests.promises.budget.support import LONG_ANSWER, ControlledOpenAI, post_chat, priced_routing, reservation_micros


@pytest.fixture
def fake(monkeypatch):
    monkeypatch.setenv("FAKE_OPENAI_KEY", "upstream-secret")
    with ControlledOpenAI() as upstream:
        yield upstream


@pytest.fixture
def gateway(start_gateway, fake):
    return start_gateway(priced_routing(fake))


def test_a_call_past_the_key_budget_gets_402_with_the_limit_and_what_is_left(gateway, make_tenant, fake):
    limit = from_micros(reservation_micros() + 10_000)
    tenant = make_tenant(key_budget=limit)
    fake.script(Reply(text=LONG_ANSWER))

    first = post_chat(gateway, tenant.secret)
    status, _, body = post_chat(gateway, tenant.secret)

    spent = RequestLog.objects.get(status=200).cost
    assert (first[0], status) == (200, 402)
    assert body == {"error": {"type": "budget_exceeded", "param": "key", "code": "budget_exceeded",
                              "message": body["error"]["message"]}}
    assert f"limit ${limit}, ${limit - spent} left" in body["error"]["message"]
    assert f"may cost up to ${from_micros(reservation_micros())}" in body["error"]["message"]
    assert fake.count == 1
    refused = RequestLog.objects.get(status=402)
    assert (refused.cost, refused.error_code, refused.error_param) == (Decimal("0"), "budget_exceeded", "key")


def test_an_org_out_of_credits_gets_402_naming_credits(gateway, make_tenant, fake):
    tenant = make_tenant(credits=Decimal("0.05"), key_budget=Decimal("10.00"))

    status, _, body = post_chat(gateway, tenant.secret)

    assert (status, body["error"]["type"], body["error"]["param"]) == (402, "budget_exceeded", "credits")
    assert "credit balance: limit $0.050000, $0.050000 left" in body["error"]["message"]
    assert to_micros(Decimal("0.05")) < reservation_micros()
    assert fake.count == 0
