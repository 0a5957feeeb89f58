"""The OpenAI Agents SDK (``openai-agents``) on its default path, the Responses API, pointed at the
gateway by base URL and key only: a run with a function tool, whole and streamed."""

import asyncio

import pytest
from agents import Agent, OpenAIResponsesModel, Runner, function_tool, set_tracing_disabled
from openai import AsyncOpenAI

from analytics.models import RequestLog
from tests.fakes import FakeGemini, FakeOpenAI, FakeTokenServer, write_service_account
from tests.gateway.conftest import openai_routing


@function_tool
def weather(location: str) -> str:
    """The weather of a city."""
    return f"40 C in {location}"


@pytest.fixture
def gateway(start_gateway, monkeypatch):
    monkeypatch.setenv("FAKE_OPENAI_KEY", "k")
    set_tracing_disabled(True)
    with FakeOpenAI() as fake:
        yield start_gateway(openai_routing(fake.base_url)), fake


def agent_for(gateway, secret: str) -> Agent:
    client = AsyncOpenAI(base_url=f"{gateway.url}/v1", api_key=secret, max_retries=0)
    return Agent(name="forecaster", instructions="Answer with the weather tool.", tools=[weather],
                 model=OpenAIResponsesModel(model="gpt-4o", openai_client=client))


def test_run_sync_calls_the_tool_and_answers(gateway, make_tenant):
    gateway, fake = gateway
    tenant = make_tenant()
    result = Runner.run_sync(agent_for(gateway, tenant.secret), "What's the weather in Florence?")

    assert result.final_output.startswith("Tool results: 40 C in ")
    assert fake.count == 2
    second = fake.requests[-1].json["messages"]
    assert [m["role"] for m in second] == ["system", "user", "assistant", "tool"]
    assert second[2]["tool_calls"][0]["function"]["name"] == "weather"
    rows = list(RequestLog.objects.order_by("created", "id"))
    assert [(row.endpoint, row.status) for row in rows] == [("responses", 200)] * 2
    assert rows[0].tool_calls[0]["name"] == "weather"


def test_run_streamed_calls_the_tool_and_streams_the_answer(gateway, make_tenant):
    gateway, fake = gateway
    tenant = make_tenant()

    async def run() -> tuple[list[str], str]:
        result = Runner.run_streamed(agent_for(gateway, tenant.secret), "What's the weather in Florence?")
        kinds, deltas = [], []
        async for event in result.stream_events():
            kinds.append(event.type)
            if event.type == "raw_response_event" and event.data.type == "response.output_text.delta":
                deltas.append(event.data.delta)
        assert "".join(deltas) == result.final_output
        return kinds, result.final_output

    kinds, final = asyncio.run(run())

    assert final.startswith("Tool results: 40 C in ")
    assert "run_item_stream_event" in kinds and "raw_response_event" in kinds
    assert fake.count == 2 and all(request.json["stream"] for request in fake.requests)
    assert list(RequestLog.objects.values_list("endpoint", "stream", "status")) == [("responses", True, 200)] * 2


def test_run_sync_through_a_gemini_deployment(start_gateway, make_tenant, tmp_path):
    set_tracing_disabled(True)
    with FakeTokenServer() as tokens, FakeGemini() as gemini:
        credentials = str(write_service_account(tmp_path, token_uri=tokens.token_uri))
        gateway = start_gateway({
            "providers": {"vertex": {"type": "vertex_gemini", **gemini.provider_options(credentials=credentials)}},
            "deployments": [{"id": "gemini-dep", "provider": "vertex", "model": "gemini-2.5-flash"}],
            "models": {"gpt-4o": {"chain": ["gemini-dep"]}},
        })
        result = Runner.run_sync(agent_for(gateway, make_tenant().secret), "What's the weather in Florence?")

    assert "40 C in " in result.final_output
    assert gemini.count == 2
    assert [c["role"] for c in gemini.requests[-1].json["contents"]] == ["user", "model", "user"]
    assert list(RequestLog.objects.values_list("endpoint", "deployment", "status")) == [
        ("responses", "gemini-dep", 200)] * 2
