"""The Chat Completions fields besides messages and tools, to Claude: mapped where Claude has an
equivalent, refused with the field's name where it has none (gateway/providers/fields.py)."""

import json

import pytest

from gateway.providers.shapes import Untranslatable
from gateway.providers.vertex_anthropic import AnthropicStreamDecoder, translate_request, translate_response
from tests.gateway.providers.support import CLAUDE, OPENAI, cassette, decode, finish_reasons, streamed_text

MODEL = "claude-3-7-sonnet@20250219"
# Anthropic's own recording of a call that thinks: the shape of its ``thinking``.
ANTHROPIC = "anthropic-claude-sonnet-4"


def _simple(**fields) -> dict:
    return {**cassette(OPENAI, "simple")[0].request, **fields}


def _with_tools(**fields) -> dict:
    return {**cassette(OPENAI, "tool")[0].request, **fields}


def _refused(body: dict, **options) -> Untranslatable:
    with pytest.raises(Untranslatable) as refused:
        translate_request(body, model=MODEL, **options)
    assert (refused.value.status, refused.value.retryable) == (400, False)
    return refused.value


def test_reasoning_effort_becomes_thinking_shaped_like_anthropics_recording() -> None:
    recorded_thinking = cassette(ANTHROPIC, "thinking")[0].request["thinking"]
    recorded = cassette(CLAUDE, "tool")[0].request

    translated = translate_request(_with_tools(reasoning_effort="low"), model=MODEL)

    assert translated == {**recorded, "thinking": {"type": "enabled", "budget_tokens": 2048}}
    assert set(translated["thinking"]) == set(recorded_thinking)


@pytest.mark.parametrize("effort, max_tokens, output_cap, thinking, sent_max_tokens", [
    # No limit named: the budget and the usual answer room (4096).
    ("medium", None, None, 8192, 8192 + 4096),
    ("minimal", None, None, 1024, 1024 + 4096),
    # ... within the output the gateway reserved for the call.
    ("high", None, 8000, 6000, 8000),
    # The client's limit counts the thinking too, as OpenAI's does: a quarter is left to answer.
    ("high", 4000, None, 3000, 4000),
])
def test_thinking_stays_below_max_tokens_as_claude_requires(effort, max_tokens, output_cap, thinking,
                                                            sent_max_tokens) -> None:
    body = _simple(reasoning_effort=effort)
    if max_tokens is None:
        del body["max_tokens"]
    else:
        body["max_tokens"] = max_tokens

    translated = translate_request(body, model=MODEL, output_cap=output_cap)

    assert translated["thinking"] == {"type": "enabled", "budget_tokens": thinking}
    assert translated["max_tokens"] == sent_max_tokens > thinking


def test_reasoning_effort_none_is_claudes_default_of_not_thinking() -> None:
    assert translate_request(_simple(reasoning_effort="none"), model=MODEL) == cassette(CLAUDE, "simple")[0].request


def test_a_limit_too_small_to_think_in_is_refused() -> None:
    assert _refused(_simple(reasoning_effort="low", max_tokens=1000)).param == "reasoning_effort"


def test_a_model_that_does_not_think_refuses_reasoning_effort() -> None:
    with pytest.raises(Untranslatable) as refused:
        translate_request(_simple(reasoning_effort="low"), model="claude-3-5-sonnet-v2@20241022")
    assert refused.value.param == "reasoning_effort"


@pytest.mark.parametrize("fields, param", [
    ({"temperature": 0.2}, "temperature"),
    ({"top_p": 0.5}, "top_p"),
    ({"top_k": 5}, "top_k"),
    ({"tool_choice": "required"}, "tool_choice"),
    ({"tool_choice": {"type": "function", "function": {"name": "weather"}}}, "tool_choice"),
])
def test_what_claude_does_not_take_while_it_thinks_is_refused_by_name(fields, param) -> None:
    assert _refused(_with_tools(reasoning_effort="medium", **fields)).param == param


def test_thinking_at_temperature_one_passes() -> None:
    translated = translate_request(_simple(reasoning_effort="low", temperature=1), model=MODEL)

    assert (translated["temperature"], translated["thinking"]["type"]) == (1, "enabled")


def test_a_tool_loops_next_step_goes_without_the_thinking_it_cannot_give_back() -> None:
    claude = cassette(CLAUDE, "tool")
    assistant = translate_response(claude[0].response, model=MODEL)["choices"][0]["message"]
    (call,) = assistant["tool_calls"]
    first = _with_tools(reasoning_effort="low")
    next_request = {**first, "messages": [*first["messages"], assistant,
                                          {"role": "tool", "tool_call_id": call["id"], "content": "40 C"}]}

    assert translate_request(next_request, model=MODEL) == claude[1].request


def test_parallel_tool_calls_false_disables_parallel_tool_use() -> None:
    recorded = cassette(CLAUDE, "tool")[0].request

    translated = translate_request(_with_tools(parallel_tool_calls=False), model=MODEL)

    assert translated == {**recorded, "tool_choice": {"type": "auto", "disable_parallel_tool_use": True}}


def test_the_user_becomes_claudes_metadata_user_id() -> None:
    translated = translate_request(_simple(user="user-42"), model=MODEL)

    assert translated == {**cassette(CLAUDE, "simple")[0].request, "metadata": {"user_id": "user-42"}}


@pytest.mark.parametrize("field, value", [
    ("logprobs", True),
    ("top_logprobs", 2),
    ("n", 2),
    ("seed", 7),
    ("presence_penalty", 0.5),
    ("frequency_penalty", 0.5),
    ("logit_bias", {"50256": -100}),
    ("audio", {"voice": "alloy", "format": "wav"}),
    ("functions", [{"name": "weather"}]),
])
def test_a_field_claude_has_no_equivalent_of_is_refused_by_name(field, value) -> None:
    refused = _refused(_simple(**{field: value}))

    assert refused.param == field and field in refused.message


@pytest.mark.parametrize("field, value", [
    ("logprobs", False), ("n", 1), ("metadata", {"team": "a"}), ("store", False), ("service_tier", "default"),
    ("response_format", {"type": "text"}), ("stream_options", {"include_usage": True}),
])
def test_a_field_that_changes_nothing_of_the_answer_is_left_behind(field, value) -> None:
    assert translate_request(_simple(**{field: value}), model=MODEL) == cassette(CLAUDE, "simple")[0].request


SCHEMA = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"],
          "additionalProperties": False}
JSON_SCHEMA = {"type": "json_schema", "json_schema": {"name": "place", "strict": True, "schema": SCHEMA}}


@pytest.mark.parametrize("response_format, schema", [(JSON_SCHEMA, SCHEMA),
                                                     ({"type": "json_object"}, {"type": "object"})])
def test_a_json_response_format_becomes_a_forced_answer_tool(response_format, schema) -> None:
    translated = translate_request(_simple(response_format=response_format), model=MODEL)

    assert translated == {
        **cassette(CLAUDE, "simple")[0].request,
        "tools": [{"name": "json_answer", "description": "Give the answer, in this JSON shape.",
                   "input_schema": schema}],
        "tool_choice": {"type": "tool", "name": "json_answer", "disable_parallel_tool_use": False},
    }


def test_with_the_clients_tools_a_json_answer_is_one_tool_among_them() -> None:
    recorded = cassette(CLAUDE, "tool")[0].request

    translated = translate_request(_with_tools(response_format=JSON_SCHEMA), model=MODEL)

    assert [tool["name"] for tool in translated["tools"]] == [recorded["tools"][0]["name"], "json_answer"]
    assert translated["tools"][0] == recorded["tools"][0]
    assert translated["tool_choice"] == {"type": "any", "disable_parallel_tool_use": False}


def test_a_json_answer_while_thinking_is_refused() -> None:
    assert _refused(_simple(response_format=JSON_SCHEMA, reasoning_effort="low")).param == "response_format"


def test_the_answer_tools_call_comes_back_as_the_answers_text() -> None:
    recorded = cassette(CLAUDE, "tool")[0].response
    answer = {**recorded, "content": [{"type": "tool_use", "id": "toolu_vrtx_01", "name": "json_answer",
                                       "input": {"city": "Rome"}}], "stop_reason": "tool_use"}

    (only,) = translate_response(answer, model=MODEL)["choices"]

    assert only["message"] == {"role": "assistant", "content": '{"city":"Rome"}'}
    assert only["finish_reason"] == "stop"


def test_a_streamed_answer_tools_input_streams_as_the_answers_text() -> None:
    recorded = cassette(CLAUDE, "tool_streaming")[0].response_body
    message_start = recorded.split("\n\n")[0]
    events = [
        {"type": "content_block_start", "index": 0,
         "content_block": {"type": "tool_use", "id": "toolu_vrtx_01", "name": "json_answer", "input": {}}},
        {"type": "content_block_delta", "index": 0, "delta": {"type": "input_json_delta", "partial_json": '{"city": '}},
        {"type": "content_block_delta", "index": 0, "delta": {"type": "input_json_delta", "partial_json": '"Rome"}'}},
        {"type": "content_block_stop", "index": 0},
        {"type": "message_delta", "delta": {"stop_reason": "tool_use"}, "usage": {"output_tokens": 9}},
        {"type": "message_stop"},
    ]
    body = message_start + "\n\n" + "".join(f"event: {e['type']}\ndata: {json.dumps(e)}\n\n" for e in events)

    chunks = decode(AnthropicStreamDecoder(model=MODEL), body.encode())

    assert streamed_text(chunks) == '{"city": "Rome"}'
    assert finish_reasons(chunks) == ["stop"]
    assert not any(choice["delta"].get("tool_calls") for chunk in chunks for choice in chunk["choices"])
