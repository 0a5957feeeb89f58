import json

import aiohttp
import pytest

from gateway.providers import build_provider
from gateway.providers.base import Provider, ProviderConfig, UpstreamError
from gateway.providers.mock import example_arguments, example_value
from tests.gateway.providers.support import finish_reasons, streamed_text, streamed_tool_calls, tool_call_deltas

WEATHER = {
    "type": "function",
    "function": {
        "name": "weather",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string"},
                "days": {"type": "integer"},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
                "detailed": {"type": "boolean"},
            },
            "required": ["city", "days", "unit"],
        },
    },
}
CLOCK = {"type": "function", "function": {"name": "clock", "parameters": {"type": "object", "properties": {}}}}
QUESTION = [{"role": "user", "content": "Weather in Rome?"}]


def _mock(**options: object) -> Provider:
    return build_provider(ProviderConfig(name="mock", type="mock", options=options))


async def _complete(provider: Provider, body: dict, *, timeout_s: float = 5) -> dict:
    # The mock never touches the network; the session is there because the interface has it.
    async with aiohttp.ClientSession() as session:
        return await provider.complete(session, body=body, model="gpt-4o", timeout_s=timeout_s)


async def _stream(provider: Provider, body: dict) -> list[dict]:
    async with aiohttp.ClientSession() as session:
        chunks = await provider.stream(session, body=body, model="gpt-4o", timeout_s=5)
        return [chunk async for chunk in chunks]


async def test_it_calls_the_first_tool_with_arguments_built_from_its_schema() -> None:
    answer = await _complete(_mock(), {"messages": QUESTION, "tools": [WEATHER, CLOCK]})

    (call,) = answer["choices"][0]["message"]["tool_calls"]
    assert call["function"]["name"] == "weather"
    assert json.loads(call["function"]["arguments"]) == {"city": "example", "days": 1, "unit": "celsius"}
    assert answer["choices"][0]["finish_reason"] == "tool_calls"


async def test_it_calls_the_tool_that_tool_choice_names() -> None:
    body = {
        "messages": QUESTION,
        "tools": [WEATHER, CLOCK],
        "tool_choice": {"type": "function", "function": {"name": "clock"}},
    }

    answer = await _complete(_mock(), body)

    assert answer["choices"][0]["message"]["tool_calls"][0]["function"] == {"name": "clock", "arguments": "{}"}


async def test_it_answers_in_text_when_tools_are_refused() -> None:
    answer = await _complete(_mock(), {"messages": QUESTION, "tools": [WEATHER], "tool_choice": "none"})

    assert answer["choices"][0]["message"] == {"role": "assistant", "content": "Mock answer to: Weather in Rome?"}


async def test_it_answers_a_tool_result_in_text() -> None:
    call = {"id": "call_1", "type": "function", "function": {"name": "weather", "arguments": "{}"}}
    messages = [
        *QUESTION,
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": "call_1", "content": "40 C"},
    ]

    answer = await _complete(_mock(), {"messages": messages, "tools": [WEATHER]})

    assert answer["choices"][0]["message"]["content"] == "The tool answered: 40 C"
    assert answer["choices"][0]["finish_reason"] == "stop"


async def test_it_counts_about_four_characters_per_token() -> None:
    answer = await _complete(_mock(), {"messages": [{"role": "user", "content": "x" * 400}]})

    usage = answer["usage"]
    assert 100 <= usage["prompt_tokens"] <= 120
    assert usage["completion_tokens"] == (len(answer["choices"][0]["message"]["content"]) + 3) // 4
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]


async def test_it_streams_the_same_text_in_pieces_then_the_finish_and_the_usage() -> None:
    chunks = await _stream(_mock(), {"messages": QUESTION})

    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert len(chunks) > 4
    assert streamed_text(chunks) == "Mock answer to: Weather in Rome?"
    assert finish_reasons(chunks) == ["stop"]
    assert chunks[-1]["choices"] == []
    assert chunks[-1]["usage"]["completion_tokens"] > 0


async def test_it_streams_a_tool_call_id_and_name_first_then_argument_fragments() -> None:
    chunks = await _stream(_mock(), {"messages": QUESTION, "tools": [WEATHER]})

    deltas = tool_call_deltas(chunks)
    assert deltas[0]["id"].startswith("call_")
    assert deltas[0]["function"] == {"name": "weather", "arguments": ""}
    assert all(set(delta) == {"index", "function"} for delta in deltas[1:])
    assert len(deltas) > 2
    (call,) = streamed_tool_calls(chunks)
    assert json.loads(call["arguments"]) == {"city": "example", "days": 1, "unit": "celsius"}
    assert finish_reasons(chunks) == ["tool_calls"]


@pytest.mark.parametrize(("status", "kind"), [(503, "server"), (429, "rate_limit")])
async def test_it_fails_with_the_configured_status_at_the_configured_rate(status: int, kind: str) -> None:
    with pytest.raises(UpstreamError) as raised:
        await _complete(_mock(fail_rate=1, fail_status=status), {"messages": QUESTION})

    assert (raised.value.kind, raised.value.status) == (kind, status)


async def test_it_times_out_when_its_latency_exceeds_the_deadline() -> None:
    with pytest.raises(UpstreamError) as raised:
        await _complete(_mock(latency_ms=10_000), {"messages": QUESTION}, timeout_s=0.05)

    assert raised.value.kind == "timeout"


def test_example_arguments_fill_nested_required_objects_and_nullable_types() -> None:
    schema = {
        "type": "object",
        "properties": {
            "place": {"type": "object", "properties": {"lat": {"type": "number"}}, "required": ["lat"]},
            "note": {"type": ["null", "string"]},
            "tags": {"type": "array", "items": {"type": "string"}},
        },
        "required": ["place", "note", "tags"],
    }

    # An array gets one item where its schema allows, as a model would write.
    assert example_arguments(schema) == {"place": {"lat": 1.5}, "note": "example", "tags": ["example"]}


@pytest.mark.parametrize("parameters, arguments", [
    ({"type": "object", "properties": {"city": "string"}, "required": ["city"]}, {"city": "example"}),
    ({"type": "object", "properties": {"city": {"type": 5, "enum": "xy"}}, "required": ["city", 7]},
     {"city": "example"}),
    ({"type": "object", "properties": [], "required": {"city": 1}}, {}),
])
def test_example_arguments_are_made_whatever_the_schema_holds(parameters: dict, arguments: dict) -> None:
    assert example_arguments(parameters) == arguments


async def test_it_answers_n_choices_each_its_own() -> None:
    answer = await _complete(_mock(), {"messages": QUESTION, "n": 3})

    texts = [choice["message"]["content"] for choice in answer["choices"]]
    assert [choice["index"] for choice in answer["choices"]] == [0, 1, 2]
    assert texts[0] == "Mock answer to: Weather in Rome?" and len(set(texts)) == 3


async def test_it_streams_n_choices_each_to_its_finish() -> None:
    chunks = await _stream(_mock(), {"messages": QUESTION, "n": 2})

    finished = [(c["choices"][0]["index"], c["choices"][0]["finish_reason"]) for c in chunks
                if c["choices"] and c["choices"][0]["finish_reason"]]
    assert finished == [(0, "stop"), (1, "stop")]
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] > 0


async def test_it_answers_json_that_fits_the_json_schema() -> None:
    schema = {"type": "object", "properties": {"unit": {"type": "string", "enum": ["c", "f"]},
                                               "days": {"type": "array", "items": {"type": "integer"}}},
              "required": ["unit", "days"], "additionalProperties": False}
    body = {"messages": QUESTION, "response_format": {"type": "json_schema",
                                                      "json_schema": {"name": "w", "schema": schema}}}

    answer = await _complete(_mock(), body)

    assert json.loads(answer["choices"][0]["message"]["content"]) == {"unit": "c", "days": [1]}


@pytest.mark.parametrize("schema, value", [
    ({"$ref": "#/$defs/A", "$defs": {"A": {"type": "object", "properties": {"x": {"const": 3}}, "required": ["x"]}}},
     {"x": 3}),
    ({"anyOf": [{"type": "null"}, {"type": "string", "format": "date"}]}, "2025-01-01"),
    ({"type": "integer", "exclusiveMinimum": 5, "maximum": 9}, 6),
    ({"type": "number", "minimum": 100}, 100),
    ({"type": "string", "minLength": 9, "maxLength": 10}, "examplexx"),
    ({"type": "array", "minItems": 3, "maxItems": 3, "items": {"type": "boolean"}}, [True, True, True]),
    ({"type": ["null", "string"]}, "example"),
])
def test_example_values_fit_their_schema(schema, value) -> None:
    assert example_value(schema) == value


def test_a_schema_that_never_ends_is_the_callers_400() -> None:
    looping = {"$ref": "#/$defs/A", "$defs": {"A": {"type": "object", "properties": {"a": {"$ref": "#/$defs/A"}},
                                                   "required": ["a"]}}}

    with pytest.raises(UpstreamError) as refused:
        example_value(looping)

    assert (refused.value.status, refused.value.retryable) == (400, False)
