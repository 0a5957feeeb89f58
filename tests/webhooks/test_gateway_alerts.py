"""Alerts from what the gateway itself logged: calls through the ``openai`` package until the
key's budget refuses one, then the scan of the committed rows."""

import json

import openai
import pytest

from analytics.models import RequestLog
from keys.audit import Actor
from money import from_micros
from tests.fakes.behaviours import Reply
from tests.gateway.conftest import make_tenant, redis_prefix, start_gateway  # noqa: F401 - fixtures
from tests.promises.budget.support import LONG_ANSWER, ControlledOpenAI, priced_routing, reservation_micros
from webhooks.alerts import alerts_scan
from webhooks.models import WebhookEvent
from webhooks.services import webhook_create


@pytest.fixture
def fake(monkeypatch):
    monkeypatch.setenv("FAKE_OPENAI_KEY", "upstream-secret")
    with ControlledOpenAI() as upstream:
        yield upstream


@pytest.mark.usefixtures("no_lag")
def test_a_key_spending_its_budget_through_the_gateway_fires_its_thresholds_but_no_run_stopped(
        start_gateway, make_tenant, fake):  # noqa: F811 - fixtures
    gateway = start_gateway(priced_routing(fake))
    # Each call settles at about 90% of its reservation: four fit, the fifth is refused (402, key).
    tenant = make_tenant(key_budget=from_micros(4 * reservation_micros()))
    webhook_create(org=tenant.org, url="https://hooks.example.com/nemo", actor=Actor.system("test"))
    fake.script(*[Reply(text=LONG_ANSWER)] * 5)
    client = gateway.client(tenant.secret)

    statuses = []
    for _ in range(5):
        try:
            client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "hello"}],
                                           max_tokens=100, extra_headers={"X-Nemo-Run": "spending-run"})
            statuses.append(200)
        except openai.APIStatusError as refused:
            statuses.append(refused.status_code)
    alerts_scan(org=tenant.org)

    assert statuses == [200, 200, 200, 200, 402]
    refused = RequestLog.objects.get(org=tenant.org, status=402)
    assert (refused.error_code, refused.error_param, refused.run_id) == ("budget_exceeded", "key", "spending-run")
    events = [json.loads(event.body) for event in WebhookEvent.objects.filter(org=tenant.org).order_by("id")]
    assert [(event["type"], event["data"]["threshold"]) for event in events] == [
        ("budget.threshold", 50), ("budget.threshold", 80)]
    assert events[1]["data"]["budget"]["key"] == tenant.key.prefix


@pytest.mark.usefixtures("no_lag")
def test_runs_the_gateway_stops_by_their_envelope_and_by_the_loop_guard_fire_run_stopped_once_each(
        start_gateway, make_tenant, fake):  # noqa: F811 - fixtures
    gateway = start_gateway(priced_routing(fake))
    tenant = make_tenant(credits=from_micros(100 * reservation_micros()), loop_limit=2)
    webhook_create(org=tenant.org, url="https://hooks.example.com/nemo", events=["run.stopped"],
                   actor=Actor.system("test"))
    client = gateway.client(tenant.secret)
    search = Reply(tool_calls=(("search", {"query": "lead"}),))
    fake.script(Reply(text=LONG_ANSWER), search, search)

    def step(run: str, **headers: str) -> int:
        try:
            client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "go on"}],
                                           max_tokens=100, extra_headers={"X-Nemo-Run": run, **headers})
            return 200
        except openai.APIStatusError as refused:
            return refused.status_code

    # One call's reservation fits the envelope, a second does not (twice: one run.stopped).
    envelope = str(from_micros(reservation_micros() * 3 // 2))
    capped = [step("capped", **{"X-Nemo-Run-Budget": envelope}) for _ in range(3)]
    looping = [step("looping") for _ in range(4)]
    alerts_scan(org=tenant.org)

    assert capped == [200, 402, 402]
    assert looping == [200, 200, 429, 429]
    events = [json.loads(event.body) for event in WebhookEvent.objects.filter(org=tenant.org).order_by("id")]
    assert [(event["type"], event["data"]["run_id"]) for event in events] == [
        ("run.stopped", "capped"), ("run.stopped", "looping")]
