"""``POST /v1/messages`` answered by the built-in mock provider (the shipped catalog): the
translated path, through the real ``anthropic`` package."""

import anthropic
import pytest

from analytics.models import RequestLog

WEATHER = {"name": "weather", "description": "Weather of a city",
           "input_schema": {"type": "object", "properties": {"location": {"type": "string"}},
                            "required": ["location"]}}


@pytest.fixture
def client(start_gateway, make_tenant):
    gateway = start_gateway()
    return anthropic.Anthropic(base_url=gateway.url, api_key=make_tenant().secret, max_retries=0)


def test_the_mock_answers_a_message_and_a_tool_call(client):
    message = client.messages.create(model="claude-sonnet-4", max_tokens=100, system="Be brief.",
                                     messages=[{"role": "user", "content": "Say hi"}])
    assert message.type == "message" and message.role == "assistant" and message.stop_reason == "end_turn"
    assert message.content[0].type == "text" and message.content[0].text
    assert message.usage.input_tokens > 0 and message.usage.output_tokens > 0

    called = client.messages.create(model="claude-sonnet-4", max_tokens=100, tools=[WEATHER],
                                    messages=[{"role": "user", "content": "Weather in Rome?"}])
    [tool_use] = [block for block in called.content if block.type == "tool_use"]
    assert called.stop_reason == "tool_use" and tool_use.name == "weather" and "location" in tool_use.input

    row = RequestLog.objects.order_by("-created").first()
    assert row.endpoint == "messages" and row.tool_calls[0]["name"] == "weather"


def test_the_mock_streams_anthropic_events(client):
    with client.messages.stream(model="claude-sonnet-4", max_tokens=100, tools=[WEATHER],
                                messages=[{"role": "user", "content": "Weather in Rome?"}]) as stream:
        kinds = [event.type for event in stream]
        final = stream.get_final_message()
    assert kinds[0] == "message_start" and kinds[-1] == "message_stop"
    assert final.stop_reason == "tool_use" and final.content[-1].type == "tool_use"
    assert final.content[-1].input.get("location") is not None
    assert final.usage.output_tokens > 0


def test_the_benchs_messages_calls_are_answered(start_gateway, make_tenant):
    """The bench's /v1/messages scenarios (plain and streamed) and their checks, on the mock."""
    from bench.__main__ import check_messages_answers
    from bench.load import wrk_script

    gateway = start_gateway()
    check_messages_answers(f"{gateway.url}/v1/messages", key=make_tenant().secret, model="claude-sonnet-4")
    script = wrk_script(path="/v1/messages", model="m", key="k", stream=True, api="messages")
    assert '"max_tokens": 64' in script and '"stream": true' in script and '"messages": [' in script
