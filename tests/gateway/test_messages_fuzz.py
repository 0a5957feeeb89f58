"""``POST /v1/messages`` fuzzed, as the chat and Responses endpoints are (tests/gateway/test_fuzz.py):
valid Messages requests mutated at random, sent to a gateway serving the model by each wire format
in turn (Claude on Vertex as it came, the others translated). Whatever the body, the answer is
never a 5xx, an error is in Anthropic's shape, every call has exactly one log row and nothing
stays reserved. Deterministic and bounded."""

from __future__ import annotations

import json
from decimal import Decimal

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from analytics.models import RequestLog
from tests.gateway.test_fuzz import (
    HEADER_VALUES,
    WIRE_FORMATS,
    mutated_document,
    request_ids_of_their_own,  # noqa: F401 - an autouse fixture, for this module's tests too
    serve_one_wire_format,
)
from tests.promises.budget.support import reservations_left

EXAMPLES_PER_WIRE_FORMAT = 60
WEATHER = {"name": "weather", "input_schema": {
    "type": "object", "properties": {"location": {"type": "string"}}, "required": ["location"]}}
VALID = [
    {"model": "agent-model", "max_tokens": 20, "messages": [{"role": "user", "content": "Say hi"}]},
    {"model": "agent-model", "max_tokens": 20, "system": [{"type": "text", "text": "Be brief."}], "messages": [
        {"role": "user", "content": [
            {"type": "text", "text": "What is this?"},
            {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}}]}]},
    {"model": "agent-model", "max_tokens": 2000, "tools": [WEATHER], "tool_choice": {"type": "auto"},
     "thinking": {"type": "enabled", "budget_tokens": 1024}, "messages": [
         {"role": "user", "content": "Weather in Rome?"},
         {"role": "assistant", "content": [
             {"type": "thinking", "thinking": "hm", "signature": "sig"},
             {"type": "tool_use", "id": "toolu_1", "name": "weather", "input": {"location": "Rome"}}]},
         {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": "sunny"}]}]},
    {"model": "agent-model", "max_tokens": 20, "stream": True, "temperature": 0.5, "top_p": 0.9, "top_k": 5,
     "stop_sequences": ["END"], "metadata": {"user_id": "u"}, "messages": [{"role": "user", "content": "Colour?"}]},
]
ERROR_FIELDS = {"type", "message", "nemo"}


@st.composite
def mutated_requests(draw) -> bytes:
    encoded = json.dumps(mutated_document(draw, VALID)).encode()
    return encoded if draw(st.integers(0, 9)) else encoded[: len(encoded) // 2]


@pytest.fixture(params=sorted(WIRE_FORMATS))
def gateway(request, start_gateway, tmp_path, monkeypatch):
    monkeypatch.setenv("FAKE_OPENAI_KEY", "k")
    yield from serve_one_wire_format(start_gateway, tmp_path, request.param)


def test_no_messages_body_gets_a_5xx_and_every_call_is_logged_once(gateway, make_tenant):
    tenant = make_tenant(credits=Decimal("1000.00"))
    sent: list[str] = []

    @settings(max_examples=EXAMPLES_PER_WIRE_FORMAT, derandomize=True, database=None, deadline=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(body=mutated_requests(), tags=HEADER_VALUES)
    def answers_within_the_contract(body: bytes, tags: str | None) -> None:
        headers = {"x-api-key": tenant.secret, "X-Nemo-Tags": tags}
        response = httpx.post(f"{gateway.url}/v1/messages", content=body, timeout=30,
                              headers={name: value for name, value in headers.items() if value is not None})
        sent.append(response.headers["x-nemo-request-id"])

        assert response.status_code < 500, response.text
        if response.status_code >= 400:
            error = response.json()
            assert error["type"] == "error" and set(error["error"]) == ERROR_FIELDS
        if response.status_code == 200 and not response.headers["content-type"].startswith("text/event-stream"):
            assert response.json()["type"] == "message"
        assert list(RequestLog.objects.filter(request_id=sent[-1]).values_list("status", flat=True)) == [
            response.status_code]

    answers_within_the_contract()

    assert RequestLog.objects.filter(org=tenant.org, endpoint="messages").count() == len(sent)
    assert reservations_left(gateway) == []
