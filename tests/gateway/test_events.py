"""The gateway's structured log: a JSON line per refused or failed call, with its request id and
its key's prefix, never a secret nor a prompt; nothing for a served call. One test reads them
from a gateway process's own stderr, as an operator's log shipper would."""

import json
from decimal import Decimal

import httpx
import openai
import pytest

from tests.fakes.behaviours import Status
from tests.fakes.openai import FakeOpenAI
from tests.gateway.conftest import openai_routing

PROMPT = "my confidential plan: SECRET-PROMPT-MARKER"


def chat(gateway, secret: str) -> httpx.Response:
    return httpx.post(f"{gateway.url}/v1/chat/completions", headers={"Authorization": f"Bearer {secret}"},
                      json={"model": "gpt-4o", "max_tokens": 5, "messages": [{"role": "user", "content": PROMPT}]},
                      timeout=30)


@pytest.mark.redis
@pytest.mark.postgres
def test_refused_and_failed_calls_are_one_json_line_each(start_gateway, make_tenant, gateway_events, monkeypatch):
    monkeypatch.setenv("FAKE_OPENAI_KEY", "upstream-secret-key")
    with FakeOpenAI() as upstream:
        gateway = start_gateway(openai_routing(upstream.base_url))
        tenant = make_tenant()
        broke = make_tenant("Broke Inc", key_budget=Decimal("0.000001"))
        served = chat(gateway, tenant.secret)
        refused = chat(gateway, broke.secret)
        unknown_key = chat(gateway, "sk-nemo-" + "A" * 43)
        upstream.script(Status(500, message=f"upstream says: {PROMPT}"))
        failed = chat(gateway, tenant.secret)

    assert [answer.status_code for answer in (served, refused, unknown_key, failed)] == [200, 402, 401, 502]
    assert [(line["event"], line["status"], line["code"]) for line in gateway_events] == [
        ("call_refused", 402, "budget_exceeded"), ("call_refused", 401, "invalid_api_key"),
        ("call_failed", 502, "upstream_error")]
    for line, answer in zip(gateway_events, (refused, unknown_key, failed), strict=True):
        assert line["request_id"] == answer.headers["x-nemo-request-id"]
    assert [line["key"] for line in gateway_events] == [broke.key.prefix, "A" * 12, tenant.key.prefix]
    assert gateway_events[0]["level"] == "info" and gateway_events[2]["level"] == "warning"
    assert gateway_events[2]["attempts"] == failed.headers["x-nemo-attempts"]
    written = json.dumps(gateway_events)
    for never in ("SECRET-PROMPT-MARKER", tenant.secret, broke.secret, "A" * 43, "upstream-secret-key"):
        assert never not in written


@pytest.mark.redis
@pytest.mark.postgres
def test_a_gateway_process_writes_its_events_as_json_lines(start_gateway_process, make_tenant, tmp_path):
    log = tmp_path / "gateway.log"
    gateway = start_gateway_process(openai_routing("http://127.0.0.1:9/v1"), output=log)
    tenant = make_tenant()
    with pytest.raises(openai.NotFoundError):
        gateway.client(tenant.secret).chat.completions.create(model="no-such-model", messages=[
            {"role": "user", "content": PROMPT}])
    missing = httpx.get(f"{gateway.url}/v1/files")
    gateway.stop()

    events = [json.loads(line) for line in log.read_text().splitlines() if line.startswith('{"ts"')]
    assert [(event["event"], event.get("status")) for event in events] == [("call_refused", 404),
                                                                         ("unknown_route", None)]
    assert events[0]["key"] == tenant.key.prefix and events[0]["model"] == "no-such-model"
    assert events[1]["request_id"] == missing.headers["x-nemo-request-id"]
    assert "SECRET-PROMPT-MARKER" not in log.read_text() and tenant.secret not in log.read_text()
