"""A Messages request as the internal Chat call: turns, blocks, tools and choices, and the 400s
that name the Messages field."""

import json

import pytest

from gateway.dialects.chat_completions_request import LINKED_IMAGE_TOKENS
from gateway.dialects.messages_request import parse_messages_request
from gateway.errors import GatewayError


def parse(**body):
    raw = json.dumps({"model": "m", "max_tokens": 100, **body}).encode()
    return parse_messages_request(raw, tags_header=None, beta="b-1")


def test_tool_results_come_first_as_tool_messages_and_thinking_is_left_out():
    request = parse(system=[{"type": "text", "text": "A"}, {"type": "text", "text": "B"}], messages=[
        {"role": "user", "content": "Weather?"},
        {"role": "assistant", "content": [{"type": "thinking", "thinking": "t", "signature": "s"},
                                          {"type": "text", "text": "Let me look."},
                                          {"type": "tool_use", "id": "toolu_1", "name": "weather",
                                           "input": {"city": "Rome"}}]},
        {"role": "user", "content": [
            {"type": "text", "text": "Here:"},
            {"type": "tool_result", "tool_use_id": "toolu_1", "is_error": True,
             "content": [{"type": "text", "text": "down"},
                         {"type": "image", "source": {"type": "url", "url": "https://x/a.png"}}]}]},
    ])
    assert request.body["messages"] == [
        {"role": "system", "content": "A\nB"},
        {"role": "user", "content": "Weather?"},
        {"role": "assistant", "content": "Let me look.", "tool_calls": [
            {"id": "toolu_1", "type": "function", "function": {"name": "weather", "arguments": '{"city":"Rome"}'}}]},
        {"role": "tool", "tool_call_id": "toolu_1", "content": "Error: down"},
        {"role": "user", "content": [{"type": "text", "text": "Here:"},
                                     {"type": "image_url", "image_url": {"url": "https://x/a.png"}}]},
    ]
    # The client's body is kept as it came, for a Claude link, with its beta header.
    assert request.native.body["messages"][1]["content"][0]["signature"] == "s"
    assert request.native.headers == {"anthropic-beta": "b-1"}


@pytest.mark.parametrize("thinking, effort", [
    ({"type": "enabled", "budget_tokens": 1024}, "low"),
    ({"type": "enabled", "budget_tokens": 10_000}, "medium"),
    ({"type": "enabled", "budget_tokens": 32_000}, "high"),
    ({"type": "disabled"}, None),
])
def test_thinking_is_an_effort(thinking, effort):
    assert parse(messages=[{"role": "user", "content": "hi"}], thinking=thinking).body.get("reasoning_effort") == effort


def test_tools_and_choices_are_chat_ones():
    tool = {"name": "f", "description": "d", "input_schema": {"type": "object"}}
    body = parse(messages=[{"role": "user", "content": "hi"}], tools=[tool], stop_sequences=["X"], top_k=3,
                 tool_choice={"type": "tool", "name": "f", "disable_parallel_tool_use": True},
                 metadata={"user_id": "u"}).body
    assert body["tools"] == [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"},
                                                               "description": "d"}}]
    assert body["tool_choice"] == {"type": "function", "function": {"name": "f"}}
    assert (body["parallel_tool_calls"], body["stop"], body["top_k"], body["user"]) == (False, ["X"], 3, "u")


@pytest.mark.parametrize("body, param", [
    ({"messages": [{"role": "user", "content": "hi"}], "max_tokens": None}, "max_tokens"),
    ({"messages": []}, "messages"),
    ({"messages": [{"role": "system", "content": "hi"}]}, "messages[0].role"),
    ({"messages": [{"role": "user", "content": [{"type": "tool_result"}]}]}, "messages[0].content[0].tool_use_id"),
    ({"messages": [{"role": "user", "content": [{"type": "image", "source": {"type": "base64"}}]}]},
     "messages[0].content[0].source"),
    ({"messages": [{"role": "user", "content": "hi"}], "tool_choice": {"type": "sometimes"}}, "tool_choice.type"),
    ({"messages": [{"role": "user", "content": "hi"}], "thinking": {"type": "enabled", "budget_tokens": 10}},
     "thinking.budget_tokens"),
    ({"messages": [{"role": "user", "content": "hi"}], "temperature": 1.5}, "temperature"),
    ({"messages": [{"role": "user", "content": "hi"}], "stop_sequences": "X"}, "stop_sequences"),
    ({"messages": [{"role": "user", "content": "hi"}], "tools": [{"name": "f"}]}, "tools[0].input_schema"),
    # What Chat Completions still checks of the Chat body: turns of blocks that make no message,
    # a document whose title is no file name, a limit beyond any model's.
    ({"messages": [{"role": "user", "content": []}]}, "messages"),
    ({"messages": [{"role": "user", "content": [{"type": "document", "title": 5, "source": {
        "type": "base64", "media_type": "application/pdf", "data": "AA=="}}]}]},
     "messages[0].content[0].file.filename"),
    ({"messages": [{"role": "user", "content": "hi"}], "max_tokens": 2**31}, "max_tokens"),
])
def test_a_malformed_request_is_a_400_naming_its_field(body, param):
    with pytest.raises(GatewayError) as refused:
        parse(**body)
    assert refused.value.status == 400 and refused.value.param == param


def test_a_text_conversation_is_bounded_by_its_bytes_and_an_image_by_url_by_what_an_image_costs():
    text = parse(system="Be brief.", messages=[{"role": "user", "content": "hi"},
                                               {"role": "assistant", "content": "Hello."}])
    image = parse(messages=[{"role": "user", "content": [
        {"type": "image", "source": {"type": "url", "url": "https://x/a.png"}}]}])

    raw = json.dumps({"model": "m", "max_tokens": 100, "system": "Be brief.", "messages": [
        {"role": "user", "content": "hi"}, {"role": "assistant", "content": "Hello."}]}).encode()
    assert text.prompt_bytes == len(raw)
    raw = json.dumps({"model": "m", "max_tokens": 100, "messages": [{"role": "user", "content": [
        {"type": "image", "source": {"type": "url", "url": "https://x/a.png"}}]}]}).encode()
    assert image.prompt_bytes == len(raw) + LINKED_IMAGE_TOKENS
