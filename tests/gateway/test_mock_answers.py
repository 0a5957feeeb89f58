"""The built-in mock, as ``make run`` serves it (the embedded default routing: every catalog model
on the mock), answers like a model through the real ``openai`` package: structured output that
pydantic parses, ``n`` choices, tool calls whose arguments fit the tool's schema."""

import json
from enum import Enum

import jsonschema
import pytest
from pydantic import BaseModel

from tests.gateway.tools import WEATHER_TOOL

MODEL = "gpt-4o"


class Unit(str, Enum):
    celsius = "celsius"
    fahrenheit = "fahrenheit"


class Reading(BaseModel):
    hour: int
    temperature: float
    unit: Unit


class Forecast(BaseModel):
    city: str
    sunny: bool
    note: str | None
    readings: list[Reading]
    tags: list[str]


@pytest.fixture
def client(start_gateway, make_tenant):
    return start_gateway().client(make_tenant().secret)


def test_parse_with_a_pydantic_model_gets_an_instance_of_it(client):
    completion = client.chat.completions.parse(
        model=MODEL, messages=[{"role": "user", "content": "Forecast for Rome"}], response_format=Forecast)

    forecast = completion.choices[0].message.parsed
    assert isinstance(forecast, Forecast)
    assert forecast.readings and isinstance(forecast.readings[0].unit, Unit)
    assert completion.choices[0].finish_reason == "stop"


def test_beta_parse_gets_the_same(client):
    completion = client.beta.chat.completions.parse(
        model=MODEL, messages=[{"role": "user", "content": "Forecast for Rome"}], response_format=Forecast)

    assert isinstance(completion.choices[0].message.parsed, Forecast)


NESTED_SCHEMA = {
    "type": "object",
    "properties": {
        "id": {"type": "string", "format": "uuid"},
        "kind": {"type": "string", "enum": ["a", "b"]},
        "score": {"type": "integer", "minimum": 10, "maximum": 20},
        "items": {"type": "array", "minItems": 2, "items": {"$ref": "#/$defs/Item"}},
        "parent": {"anyOf": [{"$ref": "#/$defs/Item"}, {"type": "null"}]},
    },
    "required": ["id", "kind", "score", "items", "parent"],
    "additionalProperties": False,
    "$defs": {
        "Item": {"type": "object", "properties": {"name": {"type": "string", "minLength": 12}},
                 "required": ["name"], "additionalProperties": False},
    },
}


@pytest.mark.parametrize("stream", [False, True])
def test_a_strict_json_schema_answer_validates_against_it_in_every_choice(client, stream):
    response_format = {"type": "json_schema", "json_schema": {"name": "nested", "strict": True,
                                                              "schema": NESTED_SCHEMA}}
    answer = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "Give"}], response_format=response_format, n=3,
        stream=stream)

    texts = _texts(answer, stream=stream)
    assert len(texts) == 3 and len(set(texts)) == 3
    for text in texts:
        jsonschema.validate(json.loads(text), NESTED_SCHEMA)


def test_json_object_answers_a_json_object(client):
    completion = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "Say it in JSON"}],
        response_format={"type": "json_object"})

    assert isinstance(json.loads(completion.choices[0].message.content), dict)


@pytest.mark.parametrize("stream", [False, True])
def test_n_choices_are_n_distinct_answers(client, stream):
    answer = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "Hi"}], n=3, stream=stream,
        **({"stream_options": {"include_usage": True}} if stream else {}))

    texts = _texts(answer, stream=stream)
    assert len(texts) == 3 and len(set(texts)) == 3
    assert all(text.endswith("Hi") for text in texts)


def test_tool_call_arguments_fit_the_tools_schema(client):
    completion = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "Weather in Rome?"}], tools=[WEATHER_TOOL])

    (call,) = completion.choices[0].message.tool_calls
    assert call.function.name == WEATHER_TOOL["function"]["name"]
    jsonschema.validate(json.loads(call.function.arguments), WEATHER_TOOL["function"]["parameters"])
    assert completion.choices[0].finish_reason == "tool_calls"


def _texts(answer, *, stream: bool) -> list[str]:
    if not stream:
        return [choice.message.content for choice in sorted(answer.choices, key=lambda c: c.index)]
    pieces: dict[int, str] = {}
    finished: dict[int, str] = {}
    for chunk in answer:
        for choice in chunk.choices:
            pieces[choice.index] = pieces.get(choice.index, "") + (choice.delta.content or "")
            if choice.finish_reason:
                finished[choice.index] = choice.finish_reason
    assert set(finished) == set(pieces) and set(finished.values()) == {"stop"}
    return [pieces[index] for index in sorted(pieces)]


@pytest.mark.parametrize("stream", [False, True])
def test_logprobs_are_given_for_the_answers_tokens(client, stream):
    answer = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "Hi"}], logprobs=True, top_logprobs=2, stream=stream)

    if stream:
        tokens = [token for chunk in answer for choice in chunk.choices if choice.logprobs
                  for token in choice.logprobs.content]
    else:
        tokens = answer.choices[0].logprobs.content
    assert "".join(token.token for token in tokens) == "Mock answer to: Hi"
    assert all(len(token.top_logprobs) == 2 and token.top_logprobs[0].token == token.token for token in tokens)
