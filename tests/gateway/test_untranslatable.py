"""A field a wire format cannot carry, through the gateway with the real ``openai`` package: the
client gets a 400 naming it, the call is logged, and nothing is sent upstream, to the first link
nor to the next (a request the caller must change is not the link's failure). Fields that have
an equivalent reach the fake in the provider's own terms."""

import json

import openai
import pytest
from pydantic import BaseModel

from analytics.models import RequestLog
from tests.fakes.anthropic import FakeAnthropic
from tests.fakes.gemini import FakeGemini
from tests.fakes.oauth import FakeTokenServer, write_service_account
from tests.fakes.openai import FakeOpenAI
from tests.gateway.tools import WEATHER_TOOL

WIRE_FORMATS = {
    "vertex_gemini": (FakeGemini, "gemini-2.5-flash"),
    "vertex_anthropic": (FakeAnthropic, "claude-3-7-sonnet@20250219"),
}
QUESTION = [{"role": "user", "content": "Weather in Rome?"}]


@pytest.fixture
def credentials(tmp_path):
    with FakeTokenServer() as server:
        yield str(write_service_account(tmp_path, token_uri=server.token_uri))


@pytest.fixture
def tenant(make_tenant):
    return make_tenant()


@pytest.fixture
def chain(start_gateway, credentials, monkeypatch):
    """``chain(kind)``: a gateway whose ``agent-model`` is a Vertex link of that wire format, then
    an OpenAI one; returns (gateway, vertex fake, openai fake)."""
    monkeypatch.setenv("FAKE_OPENAI_KEY", "sk-fake")
    opened = []

    def start(kind: str):
        fake_class, model = WIRE_FORMATS[kind]
        vertex, fallback = fake_class(), FakeOpenAI()
        opened.extend([vertex.__enter__(), fallback.__enter__()])
        gateway = start_gateway({
            "providers": {
                "vertex": {"type": kind, **vertex.provider_options(credentials=credentials)},
                "openai": {"type": "openai", "base_url": fallback.base_url, "api_key_env": "FAKE_OPENAI_KEY"},
            },
            "deployments": [{"id": "vertex-dep", "provider": "vertex", "model": model},
                            {"id": "openai-dep", "provider": "openai", "model": "gpt-4o"}],
            "models": {"agent-model": {"chain": ["vertex-dep", "openai-dep"]}},
        })
        return gateway, vertex, fallback

    yield start
    for fake in opened:
        fake.__exit__(None, None, None)


@pytest.mark.parametrize("kind, fields, param", [
    ("vertex_gemini", {"tools": [WEATHER_TOOL], "parallel_tool_calls": False}, "parallel_tool_calls"),
    ("vertex_gemini", {"logit_bias": {"50256": -100}}, "logit_bias"),
    ("vertex_gemini", {"top_logprobs": 2}, "top_logprobs"),
    ("vertex_anthropic", {"logprobs": True}, "logprobs"),
    ("vertex_anthropic", {"logprobs": True, "top_logprobs": 2}, "logprobs"),
    ("vertex_anthropic", {"n": 2}, "n"),
    ("vertex_anthropic", {"seed": 7}, "seed"),
    ("vertex_anthropic", {"presence_penalty": 0.5}, "presence_penalty"),
    ("vertex_anthropic", {"response_format": {"type": "json_object"}, "reasoning_effort": "low"},
     "response_format"),
    ("vertex_anthropic", {"reasoning_effort": "low", "temperature": 0.2}, "temperature"),
])
@pytest.mark.parametrize("stream", [False, True])
def test_a_field_the_wire_format_cannot_carry_is_a_400_naming_it(chain, tenant, kind, fields, param, stream):
    gateway, vertex, fallback = chain(kind)
    client = gateway.client(tenant.secret)

    with pytest.raises(openai.BadRequestError) as refused:
        client.chat.completions.create(model="agent-model", messages=QUESTION, stream=stream, **fields)

    error = refused.value.body
    assert refused.value.status_code == 400
    assert error["type"] == "invalid_request_error" and repr(param) in error["message"]
    assert (vertex.count, fallback.count) == (0, 0)
    row = RequestLog.objects.get()
    assert (row.status, row.deployment) == (400, "")
    assert [attempt["outcome"] for attempt in row.attempts] == ["400"] and param in row.error


def test_the_400_names_the_field_in_param(chain, tenant):
    gateway, _, _ = chain("vertex_anthropic")

    with pytest.raises(openai.BadRequestError) as refused:
        gateway.client(tenant.secret).chat.completions.create(
            model="agent-model", messages=QUESTION, logprobs=True)

    assert refused.value.body["param"] == "logprobs"


@pytest.mark.parametrize("effort", ["none", "minimal", "high", "xhigh"])
def test_reasoning_effort_reaches_gemini_as_a_thinking_budget_it_takes(chain, tenant, effort):
    gateway, gemini, _ = chain("vertex_gemini")

    completion = gateway.client(tenant.secret).chat.completions.create(
        model="agent-model", messages=QUESTION, reasoning_effort=effort)

    assert completion.choices[0].message.content == "Fake answer to: Weather in Rome?"
    assert "thinkingBudget" in gemini.requests[0].json["generationConfig"]["thinkingConfig"]


@pytest.mark.parametrize("stream", [False, True])
def test_gemini_logprobs_come_back_in_openais_shape(chain, tenant, stream):
    gateway, gemini, _ = chain("vertex_gemini")
    client = gateway.client(tenant.secret)

    answer = client.chat.completions.create(model="agent-model", messages=QUESTION, logprobs=True,
                                            top_logprobs=2, stream=stream)

    if stream:
        tokens = [token for chunk in answer for choice in chunk.choices if choice.logprobs
                  for token in choice.logprobs.content]
    else:
        tokens = answer.choices[0].logprobs.content
    assert "".join(token.token for token in tokens) == "Fake answer to: Weather in Rome?"
    assert all(len(token.top_logprobs) == 2 and token.logprob == -0.25 for token in tokens)
    config = gemini.requests[0].json["generationConfig"]
    assert (config["responseLogprobs"], config["logprobs"]) == (True, 2)


@pytest.mark.parametrize("stream", [False, True])
def test_a_tool_loop_that_thinks_on_claude_runs_to_its_answer(chain, tenant, stream):
    gateway, claude, _ = chain("vertex_anthropic")
    client = gateway.client(tenant.secret)
    options = {"model": "agent-model", "tools": [WEATHER_TOOL], "reasoning_effort": "medium",
               "parallel_tool_calls": False}

    def ask(messages):
        if not stream:
            return client.chat.completions.create(messages=messages, **options).choices[0]
        with client.chat.completions.stream(messages=messages, **options) as events:
            return events.get_final_completion().choices[0]

    first = ask(QUESTION)
    (call,) = first.message.tool_calls
    messages = [*QUESTION, {"role": "assistant", "content": None, "tool_calls": [call.model_dump()]},
                {"role": "tool", "tool_call_id": call.id, "content": json.dumps({"temperature": 21})}]
    second = ask(messages)

    assert second.finish_reason == "stop" and "21" in second.message.content
    sent = [request.json for request in claude.requests]
    assert sent[0]["thinking"] == {"type": "enabled", "budget_tokens": 8192}
    assert sent[0]["tool_choice"] == {"type": "auto", "disable_parallel_tool_use": True}
    assert "thinking" not in sent[1]


class Place(BaseModel):
    city: str
    population: int
    districts: list[str]


@pytest.mark.parametrize("stream", [False, True])
def test_structured_output_on_claude_parses_with_pydantic(chain, tenant, stream):
    gateway, claude, _ = chain("vertex_anthropic")
    client = gateway.client(tenant.secret)
    messages = [{"role": "user", "content": "Describe Rome"}]

    if stream:
        with client.chat.completions.stream(model="agent-model", messages=messages, response_format=Place) as events:
            completion = events.get_final_completion()
    else:
        completion = client.chat.completions.parse(model="agent-model", messages=messages, response_format=Place)

    assert isinstance(completion.choices[0].message.parsed, Place)
    assert completion.choices[0].finish_reason == "stop" and not completion.choices[0].message.tool_calls
    sent = claude.requests[0].json
    assert sent["tool_choice"]["name"] == "json_answer"
    assert sent["tools"][0]["input_schema"]["required"] == ["city", "population", "districts"]
