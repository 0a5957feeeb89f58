"""Bad input through a real gateway: every body a client can send is answered in OpenAI's error
shape, never a 500; nothing is sent upstream, the call is logged and nothing stays reserved."""

import json

import httpx
import pytest

from analytics.models import RequestLog
from tests.fakes.openai import FakeOpenAI
from tests.gateway.conftest import openai_routing
from tests.gateway.tools import WEATHER_TOOL
from tests.promises.budget.support import reservations_left

USER = {"role": "user", "content": "Weather in Florence?"}
CALL = {"id": "call_1", "type": "function", "function": {"name": "weather", "arguments": '{"location": "Florence"}'}}
RESULT = {"role": "tool", "tool_call_id": "call_1", "content": "sunny"}
ERROR_FIELDS = {"message", "type", "param", "code"}


def body(**fields) -> dict:
    return {"model": "gpt-4o", "messages": [USER], "max_tokens": 5, **fields}


def with_parts(*parts: dict) -> dict:
    return body(messages=[{"role": "user", "content": list(parts)}])


def with_call(**call) -> dict:
    assistant = {"role": "assistant", "content": None, "tool_calls": [{**CALL, **call}]}
    return body(messages=[USER, assistant, RESULT], tools=[WEATHER_TOOL])


def with_function(**function) -> dict:
    return with_call(function={**CALL["function"], **function})


def with_tool(**function) -> dict:
    return body(tools=[{"type": "function", "function": {**WEATHER_TOOL["function"], **function}}])


BAD_TYPES = [
    pytest.param(with_parts({"type": "text", "text": 5}), "messages[0].content[0].text", id="text part not a string"),
    pytest.param(with_parts({"type": "text"}), "messages[0].content[0].text", id="text part without text"),
    pytest.param(with_parts({"type": 5}), "messages[0].content[0].type", id="part type not a string"),
    pytest.param(with_parts({"type": "image_url", "image_url": 5}), "messages[0].content[0].image_url",
                 id="image_url not an object"),
    pytest.param(with_parts({"type": "image_url", "image_url": {"url": 5}}), "messages[0].content[0].image_url.url",
                 id="image url not a string"),
    pytest.param(with_parts({"type": "input_audio", "input_audio": {"data": "AAAA", "format": 5}}),
                 "messages[0].content[0].input_audio.format", id="audio format not a string"),
    pytest.param(with_parts({"type": "file", "file": "x"}), "messages[0].content[0].file", id="file not an object"),
    pytest.param(with_parts({"type": "file", "file": {"file_data": 5}}), "messages[0].content[0].file.file_data",
                 id="file data not a string"),
    pytest.param(with_function(arguments=5), "messages[1].tool_calls[0].function.arguments",
                 id="tool call arguments not a string"),
    pytest.param(with_call(id=5), "messages[1].tool_calls[0].id", id="tool call id not a string"),
    pytest.param(with_call(type="custom"), "messages[1].tool_calls[0].type", id="tool call of another type"),
    pytest.param(with_function(name=["weather"]), "messages[1].tool_calls[0].function.name",
                 id="tool call name not a string"),
    pytest.param(body(messages=[{**USER, "tool_call_id": 5}]), "messages[0].tool_call_id",
                 id="tool_call_id not a string"),
    pytest.param(body(messages=[{**USER, "name": 5}]), "messages[0].name", id="name not a string"),
    pytest.param(body(messages=[USER, {"role": "assistant", "content": None,
                                       "function_call": {"name": "weather", "arguments": 5}}]),
                 "messages[1].function_call.arguments", id="legacy function call arguments not a string"),
    pytest.param(body(messages=[USER, {"role": "assistant", "content": "x", "refusal": 5}]), "messages[1].refusal",
                 id="refusal not a string"),
    pytest.param(with_tool(parameters="object"), "tools[0].function.parameters", id="tool parameters not an object"),
    pytest.param(with_tool(description=5), "tools[0].function.description", id="tool description not a string"),
    pytest.param(with_tool(strict="yes"), "tools[0].function.strict", id="tool strict not a boolean"),
    pytest.param(body(tools=[WEATHER_TOOL], tool_choice="sometimes"), "tool_choice", id="unknown tool_choice"),
    pytest.param(body(tools=[WEATHER_TOOL], tool_choice={"type": "function"}), "tool_choice.function",
                 id="tool_choice without its function"),
    pytest.param(body(tools=[WEATHER_TOOL], tool_choice={"type": "function", "function": {"name": 5}}),
                 "tool_choice.function.name", id="tool_choice name not a string"),
    pytest.param(body(tools=[WEATHER_TOOL], parallel_tool_calls="no"), "parallel_tool_calls",
                 id="parallel_tool_calls not a boolean"),
    pytest.param(body(response_format={"type": "yaml"}), "response_format.type", id="unknown response_format"),
    pytest.param(body(response_format={"type": "json_schema", "json_schema": "x"}), "response_format.json_schema",
                 id="json_schema not an object"),
    pytest.param(body(response_format={"type": "json_schema", "json_schema": {"name": "x", "schema": 5}}),
                 "response_format.json_schema.schema", id="json_schema schema not an object"),
    pytest.param(body(stop=[1]), "stop", id="stop not strings"),
    pytest.param(body(user=5), "user", id="user not a string"),
    pytest.param(body(metadata="x"), "metadata", id="metadata not an object"),
    pytest.param(body(metadata={"run": 5}), "metadata", id="metadata value not a string"),
    pytest.param(body(seed=1.5), "seed", id="seed not an integer"),
    pytest.param(body(logprobs="yes"), "logprobs", id="logprobs not a boolean"),
    pytest.param(body(top_logprobs=50), "top_logprobs", id="top_logprobs out of range"),
    pytest.param(body(presence_penalty="x"), "presence_penalty", id="presence_penalty not a number"),
    pytest.param(body(frequency_penalty=3), "frequency_penalty", id="frequency_penalty out of range"),
    pytest.param(body(logit_bias=[1]), "logit_bias", id="logit_bias not an object"),
    pytest.param(body(logit_bias={"50256": 500}), "logit_bias", id="logit_bias out of range"),
    pytest.param(body(stream=True, stream_options={"include_usage": "yes"}), "stream_options.include_usage",
                 id="include_usage not a boolean"),
    pytest.param(body(max_tokens=2**40), "max_tokens", id="max_tokens beyond any model"),
    pytest.param(body(reasoning_effort="extreme"), "reasoning_effort", id="reasoning_effort not an effort"),
    pytest.param(body(reasoning_effort=["low"]), "reasoning_effort", id="reasoning_effort not a string"),
    pytest.param(body(extra=json.loads("[" * 300 + "]" * 300)), None, id="nested beyond what can be sent on"),
]


@pytest.fixture
def fake(monkeypatch):
    monkeypatch.setenv("FAKE_OPENAI_KEY", "upstream-secret")
    with FakeOpenAI() as upstream:
        yield upstream


@pytest.fixture
def gateway(start_gateway, fake):
    return start_gateway(openai_routing(fake.base_url))


@pytest.fixture
def tenant(make_tenant):
    return make_tenant()


def post(gateway, secret: str, content: bytes) -> httpx.Response:
    return httpx.post(f"{gateway.url}/v1/chat/completions", content=content,
                      headers={"Authorization": f"Bearer {secret}"}, timeout=30)


@pytest.mark.parametrize("sent, param", BAD_TYPES)
def test_a_value_of_the_wrong_type_is_a_400_naming_it_logged_and_not_sent(gateway, tenant, fake, sent, param):
    response = post(gateway, tenant.secret, json.dumps(sent).encode())

    error = response.json()["error"]
    assert (response.status_code, error["type"], error["param"]) == (400, "invalid_request_error", param)
    assert set(error) == ERROR_FIELDS
    assert fake.count == 0
    row = RequestLog.objects.get(request_id=response.headers["x-nemo-request-id"])
    assert (row.status, row.cost) == (400, 0)
    assert reservations_left(gateway) == []


def padded_to(size: int) -> bytes:
    """A valid request of exactly ``size`` bytes."""
    empty = json.dumps(body(messages=[{"role": "user", "content": ""}])).encode()
    return json.dumps(body(messages=[{"role": "user", "content": "x" * (size - len(empty))}])).encode()


@pytest.fixture
def small_limit_gateway(start_gateway, fake, settings):
    settings.NEMO_MAX_BODY_MB = 1
    return start_gateway(openai_routing(fake.base_url))


def test_a_body_over_the_limit_is_a_413_logged_and_not_sent(small_limit_gateway, tenant, fake):
    response = post(small_limit_gateway, tenant.secret, padded_to(1024 * 1024 + 1))

    error = response.json()["error"]
    assert (response.status_code, error["type"], error["code"]) == (413, "invalid_request_error", "request_too_large")
    assert set(error) == ERROR_FIELDS
    assert fake.count == 0
    row = RequestLog.objects.get(request_id=response.headers["x-nemo-request-id"])
    assert (row.status, row.cost) == (413, 0)


def test_a_body_right_at_the_limit_is_served(small_limit_gateway, tenant, fake):
    response = post(small_limit_gateway, tenant.secret, padded_to(1024 * 1024))

    assert response.status_code == 200
    assert fake.count == 1
