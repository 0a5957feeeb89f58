"""The proxy through the real ``openai`` package to Vertex Gemini and Claude on Vertex fakes.

Each fake speaks its provider's real wire format and takes a Google OAuth token minted from a
service-account file whose ``token_uri`` points at a fake token endpoint.
"""

import json

import pytest

from analytics.models import RequestLog
from tests.fakes.anthropic import FakeAnthropic
from tests.fakes.behaviours import Hang, Reply
from tests.fakes.gemini import FakeGemini
from tests.fakes.oauth import FakeTokenServer, write_service_account
from tests.gateway.tools import TIME_TOOL, WEATHER_TOOL

WIRE_FORMATS = {
    "vertex_gemini": (FakeGemini, "gemini-2.5-flash"),
    "vertex_anthropic": (FakeAnthropic, "claude-3-7-sonnet@20250219"),
}


@pytest.fixture
def token_server():
    with FakeTokenServer() as server:
        yield server


@pytest.fixture
def credentials(tmp_path, token_server):
    return str(write_service_account(tmp_path, token_uri=token_server.token_uri))


@pytest.fixture(params=sorted(WIRE_FORMATS))
def vertex(request, start_gateway, credentials):
    """(gateway, fake) for one Vertex wire format, serving the client model name ``agent-model``."""
    kind = request.param
    fake_class, model = WIRE_FORMATS[kind]
    with fake_class() as fake:
        gateway = start_gateway({
            "providers": {"vertex": {"type": kind, **fake.provider_options(credentials=credentials)}},
            "deployments": [{"id": f"{kind}-dep", "provider": "vertex", "model": model}],
            "models": {"agent-model": {"chain": [f"{kind}-dep"]}},
        })
        yield gateway, fake


@pytest.fixture
def tenant(make_tenant):
    return make_tenant()


def test_it_answers_a_plain_call_with_usage(vertex, tenant, token_server):
    gateway, fake = vertex
    raw = gateway.client(tenant.secret).chat.completions.with_raw_response.create(
        model="agent-model", messages=[{"role": "system", "content": "Be brief."},
                                       {"role": "user", "content": "Say hi in Portuguese"}], max_tokens=40)
    completion = raw.parse()

    assert completion.choices[0].message.content == "Fake answer to: Say hi in Portuguese"
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage.prompt_tokens > 0 and completion.usage.completion_tokens > 0
    assert fake.requests[0].headers["Authorization"] == "Bearer fake-token-1"
    assert token_server.count == 1
    row = RequestLog.objects.get()
    assert (row.prompt_tokens, row.completion_tokens) == (completion.usage.prompt_tokens,
                                                          completion.usage.completion_tokens)
    assert str(row.cost) == raw.headers["x-nemo-cost"] and row.cost > 0


def test_it_streams_an_answer_with_usage(vertex, tenant):
    gateway, _ = vertex
    chunks = list(gateway.client(tenant.secret).chat.completions.create(
        model="agent-model", messages=[{"role": "user", "content": "Tell me"}], max_tokens=40, stream=True,
        stream_options={"include_usage": True}))

    assert chunks[0].choices[0].delta.role == "assistant"
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "Fake answer to: Tell me"
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens > 0
    assert RequestLog.objects.get().completion_tokens == chunks[-1].usage.completion_tokens


def test_a_tool_call_and_its_result_round_trip(vertex, tenant):
    gateway, fake = vertex
    client = gateway.client(tenant.secret)
    messages = [{"role": "user", "content": "Weather in Florence?"}]
    first = client.chat.completions.create(model="agent-model", messages=messages, tools=[WEATHER_TOOL],
                                           max_tokens=60)
    call = first.choices[0].message.tool_calls[0]
    messages += [first.choices[0].message.model_dump(exclude_none=True),
                 {"role": "tool", "tool_call_id": call.id, "content": "sunny, 24C"}]
    second = client.chat.completions.create(model="agent-model", messages=messages, tools=[WEATHER_TOOL],
                                            max_tokens=60)

    assert first.choices[0].finish_reason == "tool_calls"
    assert call.function.name == "weather" and "location" in json.loads(call.function.arguments)
    # Gemini carries a tool result as a functionResponse object; the fake quotes what it got.
    assert second.choices[0].message.content.startswith("Tool results: ")
    assert "sunny, 24C" in second.choices[0].message.content
    assert fake.count == 2
    assert RequestLog.objects.order_by("id").first().tool_calls[0]["name"] == "weather"


def test_parallel_tool_calls_stream_by_index(vertex, tenant):
    gateway, fake = vertex
    fake.script(Reply(parallel=True))
    chunks = list(gateway.client(tenant.secret).chat.completions.create(
        model="agent-model", messages=[{"role": "user", "content": "Weather and time in Rome"}],
        tools=[WEATHER_TOOL, TIME_TOOL], stream=True, max_tokens=80, stream_options={"include_usage": True}))

    calls: dict[int, dict] = {}
    for chunk in chunks:
        for delta in (chunk.choices[0].delta.tool_calls or []) if chunk.choices else []:
            slot = calls.setdefault(delta.index, {"id": delta.id, "name": delta.function.name, "arguments": ""})
            slot["arguments"] += delta.function.arguments or ""
    assert [calls[i]["name"] for i in sorted(calls)] == ["weather", "local_time"]
    assert all(c["id"] for c in calls.values())
    assert all(isinstance(json.loads(c["arguments"]), dict) for c in calls.values())
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "tool_calls"
    assert chunks[-1].usage.prompt_tokens > 0


def test_a_tool_turn_fails_over_from_gemini_to_claude(start_gateway, make_tenant, credentials):
    """Planning and tool-use calls fail over alike: the tool call Gemini made (and its thought
    signature) translates onto Claude's wire format on the next link."""
    with FakeGemini() as gemini, FakeAnthropic() as claude:
        gateway = start_gateway({
            "providers": {
                "gemini": {"type": "vertex_gemini", **gemini.provider_options(credentials=credentials)},
                "claude": {"type": "vertex_anthropic", **claude.provider_options(credentials=credentials)},
            },
            "deployments": [
                {"id": "flash", "provider": "gemini", "model": "gemini-2.5-flash", "timeout_s": 0.5},
                {"id": "sonnet", "provider": "claude", "model": "claude-3-7-sonnet@20250219"},
            ],
            "models": {"agent-model": {"chain": ["flash", "sonnet"]}},
        })
        client = gateway.client(make_tenant().secret)
        messages = [{"role": "user", "content": "Weather in Florence?"}]
        first = client.chat.completions.create(model="agent-model", messages=messages, tools=[WEATHER_TOOL],
                                               max_tokens=60)
        call = first.choices[0].message.tool_calls[0]
        messages += [first.choices[0].message.model_dump(exclude_none=True),
                     {"role": "tool", "tool_call_id": call.id, "content": "sunny, 24C"}]
        gemini.script(Hang())
        raw = client.chat.completions.with_raw_response.create(model="agent-model", messages=messages,
                                                               tools=[WEATHER_TOOL], max_tokens=60)

        sent_to_claude = claude.requests[0].json["messages"]

    assert raw.headers["x-nemo-attempts"] == "flash:timeout, sonnet:ok"
    assert raw.parse().choices[0].message.content == "Tool results: sunny, 24C"
    tool_use = next(b for b in sent_to_claude[1]["content"] if b["type"] == "tool_use")
    tool_result = next(b for b in sent_to_claude[2]["content"] if b["type"] == "tool_result")
    assert tool_use["name"] == "weather" and tool_result["tool_use_id"] == tool_use["id"]
