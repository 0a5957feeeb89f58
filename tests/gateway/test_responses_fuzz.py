"""``POST /v1/responses`` fuzzed, as the chat endpoint is (tests/gateway/test_fuzz.py): valid
Responses requests mutated at random, sent to a gateway serving the model by each wire format in
turn. Whatever the body, the answer is never a 5xx, an error is in OpenAI's shape, every call has
exactly one log row and nothing stays reserved. Deterministic and bounded."""

from __future__ import annotations

import json
from decimal import Decimal

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from analytics.models import RequestLog
from tests.gateway.test_fuzz import (
    ERROR_FIELDS,
    HEADER_VALUES,
    WIRE_FORMATS,
    mutated_document,
    request_ids_of_their_own,  # noqa: F401 - an autouse fixture, for this module's tests too
    serve_one_wire_format,
)
from tests.promises.budget.support import reservations_left

EXAMPLES_PER_WIRE_FORMAT = 80
WEATHER = {"type": "function", "name": "weather", "parameters": {
    "type": "object", "properties": {"location": {"type": "string"}}, "required": ["location"]}}
VALID = [
    {"model": "agent-model", "input": "Say hi", "max_output_tokens": 20, "store": False},
    {"model": "agent-model", "instructions": "Be brief.", "max_output_tokens": 20, "store": False, "input": [
        {"role": "developer", "content": "Answer in one word."},
        {"role": "user", "content": [{"type": "input_text", "text": "What is this?"},
                                     {"type": "input_image", "image_url": "data:image/png;base64,iVBORw0KGgo="}]}]},
    {"model": "agent-model", "max_output_tokens": 20, "tools": [WEATHER], "tool_choice": "auto", "store": False,
     "parallel_tool_calls": True, "input": [
         {"role": "user", "content": "Weather in Rome?"},
         {"type": "reasoning", "id": "rs_1", "summary": []},
         {"type": "function_call", "call_id": "call_1", "name": "weather", "arguments": '{"location": "Rome"}'},
         {"type": "function_call_output", "call_id": "call_1", "output": "sunny"}]},
    {"model": "agent-model", "max_output_tokens": 20, "stream": True, "temperature": 0.5, "top_p": 0.9,
     "store": False, "metadata": {"run": "r1"}, "reasoning": {"effort": "low"}, "input": "Colour?",
     "text": {"format": {"type": "json_schema", "name": "answer", "strict": True, "schema": {
         "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}},
]


@st.composite
def mutated_requests(draw) -> bytes:
    encoded = json.dumps(mutated_document(draw, VALID)).encode()
    return encoded if draw(st.integers(0, 9)) else encoded[: len(encoded) // 2]


@pytest.fixture(params=sorted(WIRE_FORMATS))
def gateway(request, start_gateway, tmp_path):
    yield from serve_one_wire_format(start_gateway, tmp_path, request.param)


def test_no_responses_body_gets_a_5xx_and_every_call_is_logged_once(gateway, make_tenant):
    tenant = make_tenant(credits=Decimal("1000.00"))
    sent: list[str] = []

    @settings(max_examples=EXAMPLES_PER_WIRE_FORMAT, derandomize=True, database=None, deadline=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(body=mutated_requests(), tags=HEADER_VALUES)
    def answers_within_the_contract(body: bytes, tags: str | None) -> None:
        headers = {"Authorization": f"Bearer {tenant.secret}", "X-Nemo-Tags": tags}
        response = httpx.post(f"{gateway.url}/v1/responses", content=body, timeout=30,
                              headers={name: value for name, value in headers.items() if value is not None})
        sent.append(response.headers["x-nemo-request-id"])

        assert response.status_code < 500, response.text
        assert response.status_code < 400 or set(response.json()["error"]) == ERROR_FIELDS
        if response.status_code == 200 and not response.headers["content-type"].startswith("text/event-stream"):
            assert response.json()["object"] == "response"
        assert list(RequestLog.objects.filter(request_id=sent[-1]).values_list("status", flat=True)) == [
            response.status_code]

    answers_within_the_contract()

    assert RequestLog.objects.filter(org=tenant.org, endpoint="responses").count() == len(sent)
    assert reservations_left(gateway) == []
