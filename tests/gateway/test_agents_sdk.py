"""The OpenAI Agents SDK (``openai-agents``) on its default path, the Responses API, pointed at the
gateway by base URL and key only: a run with a function tool, whole and streamed."""

import asyncio

import pytest
from agents import Agent, OpenAIResponsesModel, Runner, function_tool, set_tracing_disabled
from openai import AsyncOpenAI

from analytics.models import RequestLog
from tests.fakes.openai import FakeOpenAI
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
