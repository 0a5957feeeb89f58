"""Stay up: every fault of a link moves the call down its chain; the client never sees it.

Two fake OpenAI-compatible upstreams stand for two providers. For each fault: what the client
gets, what ``x-nemo-attempts`` says, and what the request log holds.
"""

import time

import httpx
import openai
import pytest

from analytics.models import RequestLog
from tests.fakes.behaviours import DieBeforeFirstByte, DieMidway, Hang, Reset, Status
from tests.fakes.openai import FakeOpenAI

HELLO = [{"role": "user", "content": "hello"}]


@pytest.fixture
def primary(monkeypatch):
    monkeypatch.setenv("FAKE_OPENAI_KEY", "k")
    with FakeOpenAI() as fake:
        yield fake


@pytest.fixture
def backup():
    with FakeOpenAI() as fake:
        yield fake


def two_link_routing(primary, backup, **model_extra) -> dict:
    return {
        "providers": {
            "first": {"type": "openai", "base_url": primary.base_url, "api_key_env": "FAKE_OPENAI_KEY"},
            "second": {"type": "openai", "base_url": backup.base_url, "api_key_env": "FAKE_OPENAI_KEY"},
        },
        "deployments": [
            {"id": "primary", "provider": "first", "model": "gpt-4o", "timeout_s": 0.5, "tags": ["function-calling"]},
            {"id": "backup", "provider": "second", "model": "gpt-4o", "timeout_s": 5},
        ],
        "models": {"gpt-4o": {"chain": ["primary", "backup"], **model_extra}},
    }


@pytest.fixture
def gateway(start_gateway, primary, backup):
    return start_gateway(two_link_routing(primary, backup))


@pytest.fixture
def tenant(make_tenant):
    return make_tenant()


def ask(gateway, tenant, **options):
    return gateway.client(tenant.secret).chat.completions.with_raw_response.create(
        model="gpt-4o", messages=HELLO, max_tokens=20, **options)


@pytest.mark.parametrize("fault, outcome", [
    (Hang(), "timeout"),
    (Status(500), "500"),
    (Status(503, retry_after="1"), "503"),
    (Status(429, retry_after="1"), "429"),
    (Reset(), "connect_error"),
])
def test_a_failing_primary_falls_back_transparently(gateway, tenant, primary, backup, fault, outcome):
    primary.script(fault)
    raw = ask(gateway, tenant)

    assert raw.parse().choices[0].message.content == "Fake answer to: hello"
    assert raw.headers["x-nemo-attempts"] == f"primary:{outcome}, backup:ok"
    assert raw.headers["x-nemo-deployment"] == "backup"
    assert (primary.count, backup.count) == (1, 1)
    row = RequestLog.objects.get()
    assert [(a["deployment"], a["outcome"]) for a in row.attempts] == [("primary", outcome), ("backup", "ok")]
    assert (row.status, row.deployment) == (200, "backup")


@pytest.mark.parametrize("fault, outcome", [(DieBeforeFirstByte(), "connect_error"), (Hang(), "timeout")])
def test_a_stream_that_dies_before_its_first_byte_falls_back(gateway, tenant, primary, backup, fault, outcome):
    primary.script(fault)
    raw = ask(gateway, tenant, stream=True)
    chunks = list(raw.parse())

    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "Fake answer to: hello"
    assert raw.headers["x-nemo-attempts"] == f"primary:{outcome}, backup:ok"
    assert RequestLog.objects.get().deployment == "backup"


def test_a_stream_that_dies_midway_ends_with_an_error_event_and_is_logged_as_failed(gateway, tenant, primary, backup):
    primary.script(DieMidway(events=2))
    stream = gateway.client(tenant.secret).chat.completions.create(model="gpt-4o", messages=HELLO, max_tokens=20,
                                                                  stream=True)
    received = []
    with pytest.raises(openai.APIError) as caught:
        for chunk in stream:
            received.append(chunk)

    assert "upstream stream broke" in str(caught.value.message)
    assert len(received) >= 1 and backup.count == 0
    row = RequestLog.objects.get()
    assert (row.status, row.deployment) == (502, "primary")
    assert row.attempts[-1]["outcome"] == "broken_stream"
    assert row.completion_tokens >= 1 and row.cost > 0


def test_a_client_error_is_returned_not_retried(gateway, tenant, primary, backup):
    primary.script(Status(400, message="context too long"))
    with pytest.raises(openai.BadRequestError) as caught:
        ask(gateway, tenant)

    assert "context too long" in caught.value.message
    assert caught.value.response.headers["x-nemo-attempts"] == "primary:400"
    assert backup.count == 0
    assert RequestLog.objects.get().status == 400


def test_when_every_link_fails_the_client_gets_a_502_naming_each_attempt(gateway, tenant, primary, backup):
    primary.script(Status(500))
    backup.script(Status(503))
    with pytest.raises(openai.InternalServerError) as caught:
        ask(gateway, tenant)

    assert caught.value.status_code == 502
    assert caught.value.body["type"] == "upstream_error"
    assert caught.value.response.headers["x-nemo-attempts"] == "primary:500, backup:503"
    row = RequestLog.objects.get()
    assert (row.status, row.cost, len(row.attempts)) == (502, 0, 2)


def test_retry_after_cools_the_link_down(gateway, tenant, primary, backup):
    primary.script(Status(429, retry_after="30"))
    ask(gateway, tenant)
    raw = ask(gateway, tenant)

    assert raw.headers["x-nemo-attempts"] == "primary:cooldown, backup:ok"
    assert primary.count == 1 and backup.count == 2


def test_retry_after_as_an_http_date_cools_the_link_down(gateway, tenant, primary, backup):
    primary.script(Status(503, retry_after=time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(time.time() + 60))))
    ask(gateway, tenant)

    assert ask(gateway, tenant).headers["x-nemo-attempts"] == "primary:cooldown, backup:ok"


def test_a_chain_stopped_only_by_upstream_rate_limits_is_a_429_with_the_first_moment_a_link_is_free(
        gateway, tenant, primary, backup):
    primary.script(Status(429, retry_after="30"))
    backup.script(Status(429, retry_after="5"), Status(429, retry_after="5"))

    with pytest.raises(openai.RateLimitError) as first:
        gateway.client(tenant.secret).chat.completions.create(model="gpt-4o", messages=HELLO, max_tokens=20)
    # The next call finds both links cooling down and sends nothing.
    second = httpx.post(f"{gateway.url}/v1/chat/completions", headers={"Authorization": f"Bearer {tenant.secret}"},
                        json={"model": "gpt-4o", "messages": HELLO, "max_tokens": 20})

    assert first.value.code == "upstream_rate_limited"
    assert first.value.response.headers["retry-after"] == "5"
    assert first.value.response.headers["x-nemo-attempts"] == "primary:429, backup:429"
    assert (second.status_code, second.json()["error"]["code"]) == (429, "upstream_rate_limited")
    assert second.headers["x-nemo-attempts"] == "primary:cooldown, backup:cooldown"
    assert 1 <= int(second.headers["retry-after"]) <= 5
    assert (primary.count, backup.count) == (1, 1)
    assert [row.status for row in RequestLog.objects.order_by("id")] == [429, 429]


def test_a_chain_with_a_link_failing_otherwise_is_still_a_502(gateway, tenant, primary, backup):
    primary.script(Status(429, retry_after="30"))
    backup.script(Status(500))

    raw = httpx.post(f"{gateway.url}/v1/chat/completions", headers={"Authorization": f"Bearer {tenant.secret}"},
                     json={"model": "gpt-4o", "messages": HELLO, "max_tokens": 20})

    assert (raw.status_code, raw.json()["error"]["code"]) == (502, "upstream_error")


def test_the_circuit_opens_after_repeated_failures_and_skips_the_link(gateway, tenant, primary, backup):
    primary.script(*[Status(500)] * 5)
    for _ in range(5):
        ask(gateway, tenant)
    raw = ask(gateway, tenant)

    assert raw.headers["x-nemo-attempts"] == "primary:circuit_open, backup:ok"
    assert primary.count == 5


def test_tags_keep_the_call_on_deployments_that_have_them(gateway, tenant, primary, backup):
    primary.script(Status(500))
    with pytest.raises(openai.InternalServerError) as caught:
        ask(gateway, tenant, extra_headers={"X-Nemo-Tags": "function-calling"})

    assert caught.value.response.headers["x-nemo-attempts"] == "primary:500"
    assert backup.count == 0


def test_tags_no_deployment_has_are_a_400(gateway, tenant):
    response = httpx.post(f"{gateway.url}/v1/chat/completions", headers={"Authorization": f"Bearer {tenant.secret}"},
                          json={"model": "gpt-4o", "messages": HELLO, "tags": ["gpu-exotic"]})

    assert response.status_code == 400 and response.json()["error"]["param"] == "tags"


def test_a_call_with_tools_skips_deployments_without_tool_support(start_gateway, make_tenant, primary, backup):
    routing = two_link_routing(primary, backup)
    routing["deployments"][0]["capabilities"] = ["streaming"]
    gateway = start_gateway(routing)
    tenant = make_tenant()
    tool = {"type": "function", "function": {"name": "lookup", "parameters": {"type": "object", "properties": {}}}}
    raw = ask(gateway, tenant, tools=[tool])

    assert raw.headers["x-nemo-attempts"] == "backup:ok"
    assert primary.count == 0


def test_latency_routing_prefers_the_faster_link(start_gateway, make_tenant, primary, backup):
    gateway = start_gateway(two_link_routing(primary, backup, routing="latency"))
    tenant = make_tenant()
    gateway.on_loop(lambda state: state.store.latency_record("primary", 900.0))
    gateway.on_loop(lambda state: state.store.latency_record("backup", 5.0))
    raw = ask(gateway, tenant)

    assert raw.headers["x-nemo-attempts"] == "backup:ok"
    assert primary.count == 0


def test_latency_routing_still_falls_back_in_that_order(start_gateway, make_tenant, primary, backup):
    gateway = start_gateway(two_link_routing(primary, backup, routing="latency"))
    tenant = make_tenant()
    gateway.on_loop(lambda state: state.store.latency_record("primary", 900.0))
    gateway.on_loop(lambda state: state.store.latency_record("backup", 5.0))
    backup.script(Status(500))

    assert ask(gateway, tenant).headers["x-nemo-attempts"] == "backup:500, primary:ok"
