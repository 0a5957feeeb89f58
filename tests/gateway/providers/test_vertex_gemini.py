import json
import re

import pytest
from openai.types.chat import ChatCompletion

from gateway.providers import build_provider
from gateway.providers.base import Provider, ProviderConfig, UpstreamError
from gateway.providers.vertex_gemini import (
    GeminiStreamDecoder,
    gemini_schema,
    signature_from_tool_call_id,
    translate_request,
    translate_response,
)
from tests.fakes import FakeTokenServer
from tests.gateway.providers.support import (
    GEMINI,
    OPENAI,
    cassette,
    decode,
    decode_in_slices,
    finish_reasons,
    sse,
    streamed_text,
    streamed_tool_calls,
    without_volatile_fields,
)

MODEL = "gemini-2.5-flash"
# What every wire format accepts in a tool call id.
PORTABLE_ID = re.compile(r"^[A-Za-z0-9_-]+$")
TOOL_RESULTS = {"tool": ["40 C"], "multi_tool": ["5", "6"]}


def _provider(**options: str) -> Provider:
    options = {"project": "fake-project", "location": "us-east5", **options}
    return build_provider(ProviderConfig(name="vertex", type="vertex_gemini", options=options))


def _next_turn(first_request: dict, assistant: dict, results: list[str]) -> dict:
    """The client's next request: the answer echoed back, then one tool message per call."""
    tool_messages = [
        {"role": "tool", "tool_call_id": call["id"], "content": result}
        for call, result in zip(assistant["tool_calls"], results, strict=True)
    ]
    return {**first_request, "messages": [*first_request["messages"], assistant, *tool_messages]}


# --- requests ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name", ["simple", "tool", "multi_tool", "simple_streaming", "tool_streaming", "multi_tool_streaming"]
)
def test_it_translates_the_recorded_openai_request_into_the_recorded_gemini_request(name: str) -> None:
    openai_request = cassette(OPENAI, name)[0].request

    assert translate_request(openai_request) == cassette(GEMINI, name)[0].request


@pytest.mark.parametrize("name", ["tool", "multi_tool"])
def test_it_sends_thought_signatures_back_like_the_recording(name: str) -> None:
    """The answer goes through the OpenAI SDK's own model and back, as an agent would echo it."""
    gemini = cassette(GEMINI, name)
    answer = ChatCompletion.model_validate(translate_response(gemini[0].response, model=MODEL))
    assistant = answer.choices[0].message.model_dump(exclude_none=True)

    next_request = _next_turn(cassette(OPENAI, name)[0].request, assistant, TOOL_RESULTS[name])

    assert translate_request(next_request) == gemini[1].request


@pytest.mark.parametrize("name", ["tool_streaming", "multi_tool_streaming"])
def test_it_sends_streamed_thought_signatures_back_like_the_recording(name: str) -> None:
    gemini = cassette(GEMINI, name)
    chunks = decode(GeminiStreamDecoder(model=MODEL), gemini[0].response_body.encode())
    calls = [
        {"id": call["id"], "type": "function", "function": {"name": call["name"], "arguments": call["arguments"]}}
        for call in streamed_tool_calls(chunks)
    ]
    assistant = {"role": "assistant", "content": None, "tool_calls": calls}

    next_request = _next_turn(
        cassette(OPENAI, name)[0].request, assistant, TOOL_RESULTS[name.removesuffix("_streaming")]
    )

    assert translate_request(next_request) == gemini[1].request


def test_it_names_a_tool_result_after_the_call_it_answers() -> None:
    call = {"id": "toolu_vrtx_01", "type": "function", "function": {"name": "weather", "arguments": '{"city":"Rome"}'}}
    body = {
        "messages": [
            {"role": "user", "content": "Weather in Rome?"},
            {"role": "assistant", "content": "Let me look.", "tool_calls": [call]},
            {"role": "tool", "tool_call_id": "toolu_vrtx_01", "content": [{"type": "text", "text": "40 C"}]},
        ]
    }

    contents = translate_request(body)["contents"]

    assert contents[1:] == [
        {
            "role": "model",
            "parts": [{"text": "Let me look."}, {"functionCall": {"name": "weather", "args": {"city": "Rome"}}}],
        },
        {"role": "user", "parts": [{"functionResponse": {"name": "weather", "response": {"result": "40 C"}}}]},
    ]


def test_it_leaves_out_the_empty_texts_vertex_refuses() -> None:
    call = {"id": "call_1", "type": "function", "function": {"name": "clock", "arguments": ""}}
    body = {
        "messages": [
            {"role": "system", "content": ""},
            {"role": "user", "content": [{"type": "text", "text": ""}, {"type": "text", "text": "Time?"}]},
            {"role": "assistant", "content": "", "tool_calls": [call]},
        ]
    }

    payload = translate_request(body)

    assert "systemInstruction" not in payload
    assert payload["contents"] == [
        {"role": "user", "parts": [{"text": "Time?"}]},
        {"role": "model", "parts": [{"functionCall": {"name": "clock", "args": {}}}]},
    ]


def test_it_refuses_a_tool_result_for_a_call_it_never_saw() -> None:
    body = {"messages": [{"role": "user", "content": "hi"}, {"role": "tool", "tool_call_id": "nope", "content": "x"}]}

    with pytest.raises(UpstreamError) as raised:
        translate_request(body)

    assert (raised.value.kind, raised.value.status) == ("client", 400)


def test_it_refuses_tool_call_arguments_that_are_not_json() -> None:
    call = {"id": "call_1", "type": "function", "function": {"name": "weather", "arguments": "{not json"}}

    with pytest.raises(UpstreamError) as raised:
        translate_request({"messages": [{"role": "assistant", "content": None, "tool_calls": [call]}]})

    assert raised.value.kind == "client"


def test_it_sends_system_and_developer_messages_as_the_system_instruction() -> None:
    body = {
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "developer", "content": [{"type": "text", "text": "Answer in French."}]},
            {"role": "user", "content": "Hello"},
            {"role": "user", "content": "Anyone there?"},
        ]
    }

    payload = translate_request(body)

    assert payload["systemInstruction"] == {
        "role": "user",
        "parts": [{"text": "Be brief."}, {"text": "Answer in French."}],
    }
    assert payload["contents"] == [{"role": "user", "parts": [{"text": "Hello"}, {"text": "Anyone there?"}]}]


def test_it_sends_images_inline_or_by_uri() -> None:
    content = [
        {"type": "text", "text": "What is this?"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
        {"type": "image_url", "image_url": {"url": "gs://bucket/cat.jpg"}},
    ]

    parts = translate_request({"messages": [{"role": "user", "content": content}]})["contents"][0]["parts"]

    assert parts == [
        {"text": "What is this?"},
        {"inlineData": {"mimeType": "image/png", "data": "iVBORw0KGgo="}},
        {"fileData": {"mimeType": "image/jpeg", "fileUri": "gs://bucket/cat.jpg"}},
    ]


@pytest.mark.parametrize(
    ("tool_choice", "config"),
    [
        ("auto", {"mode": "AUTO"}),
        ("none", {"mode": "NONE"}),
        ("required", {"mode": "ANY"}),
        ({"type": "function", "function": {"name": "weather"}}, {"mode": "ANY", "allowedFunctionNames": ["weather"]}),
    ],
)
def test_it_maps_tool_choice(tool_choice: str | dict, config: dict) -> None:
    tools = [{"type": "function", "function": {"name": "weather", "parameters": {"type": "object"}}}]

    payload = translate_request({"messages": [], "tools": tools, "tool_choice": tool_choice})

    assert payload["toolConfig"] == {"functionCallingConfig": config}
    assert payload["tools"] == [{"functionDeclarations": [{"name": "weather"}]}]


def test_it_maps_generation_settings() -> None:
    body = {
        "messages": [],
        "temperature": 0.2,
        "top_p": 0.9,
        "max_tokens": 50,
        "max_completion_tokens": 100,
        "stop": "END",
        "n": 2,
        "seed": 7,
        "response_format": {
            "type": "json_schema",
            "json_schema": {"name": "answer", "schema": {"type": "object", "properties": {"city": {"type": "string"}}}},
        },
    }

    assert translate_request(body)["generationConfig"] == {
        "temperature": 0.2,
        "topP": 0.9,
        "maxOutputTokens": 100,
        "stopSequences": ["END"],
        "candidateCount": 2,
        "seed": 7,
        "responseMimeType": "application/json",
        "responseSchema": {"type": "OBJECT", "properties": {"city": {"type": "STRING"}}},
    }


def test_it_converts_json_schema_into_what_gemini_accepts() -> None:
    schema = {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "city": {"type": "string", "description": "the city", "minLength": 1},
            "unit": {"type": ["string", "null"], "enum": ["c", "f"]},
            "days": {"type": "integer", "format": "int32", "minimum": 1},
            "day": {"type": "string", "format": "date"},
            "tags": {"type": "array", "items": {"type": "string"}, "maxItems": 3},
            "place": {"$ref": "#/$defs/Place", "description": "where"},
            "either": {"anyOf": [{"type": "string"}, {"type": "integer"}, {"type": "null"}]},
            "level": {"const": "high"},
            "priority": {"type": "integer", "enum": [1, 2]},
        },
        "required": ["city", "ghost"],
        "$defs": {"Place": {"type": "object", "properties": {"name": {"type": "string"}}, "required": ["name"]}},
    }

    assert gemini_schema(schema) == {
        "type": "OBJECT",
        "properties": {
            "city": {"type": "STRING", "description": "the city", "minLength": 1},
            "unit": {"type": "STRING", "nullable": True, "enum": ["c", "f"]},
            "days": {"type": "INTEGER", "format": "int32", "minimum": 1},
            "day": {"type": "STRING"},
            "tags": {"type": "ARRAY", "items": {"type": "STRING"}, "maxItems": 3},
            "place": {
                "type": "OBJECT",
                "description": "where",
                "properties": {"name": {"type": "STRING"}},
                "required": ["name"],
            },
            "either": {"nullable": True, "anyOf": [{"type": "STRING"}, {"type": "INTEGER"}]},
            "level": {"enum": ["high"]},
            "priority": {"type": "INTEGER"},
        },
        "required": ["city"],
    }


def test_it_cuts_a_recursive_schema_at_its_second_level() -> None:
    schema = {
        "type": "object",
        "properties": {"root": {"$ref": "#/$defs/Node"}},
        "$defs": {"Node": {"type": "object", "properties": {"child": {"$ref": "#/$defs/Node"}}}},
    }

    assert gemini_schema(schema)["properties"]["root"] == {
        "type": "OBJECT",
        "properties": {"child": {"type": "OBJECT"}},
    }


def _chain_of_refs(length: int, *, named_twice: bool) -> dict:
    """Definitions D0 … D{length}, each naming the next once (a chain) or twice (doubling)."""
    def step(number: int) -> dict:
        reference = {"$ref": f"#/$defs/D{number + 1}"}
        return {"type": "object", "properties": {"a": reference, "b": reference} if named_twice else {"a": reference}}

    return {"$ref": "#/$defs/D0", "$defs": {f"D{number}": step(number) for number in range(length)}}


@pytest.mark.parametrize("schema", [
    pytest.param({"type": 5}, id="type not a name"),
    pytest.param({"type": ["string", None]}, id="type list not of names"),
    pytest.param({"type": "object", "properties": {"city": "string"}}, id="property not a schema"),
    pytest.param({"type": "object", "properties": {"city": {"type": "string"}}, "required": "city"},
                 id="required not a list"),
    pytest.param({"anyOf": {"type": "string"}}, id="anyOf not a list"),
    pytest.param({"allOf": [5]}, id="allOf not of schemas"),
    pytest.param({"enum": 5}, id="enum not a list"),
    pytest.param({"$ref": 5}, id="ref not a string"),
    pytest.param({"$ref": "#/$defs/Place", "$defs": {"Place": "object"}}, id="definition not a schema"),
    pytest.param({"$defs": ["Place"]}, id="defs not an object"),
    pytest.param(_chain_of_refs(200, named_twice=False), id="a chain of refs too long"),
    pytest.param(_chain_of_refs(30, named_twice=True), id="refs that double at every level"),
])
def test_a_schema_it_cannot_convert_is_the_clients_400(schema: dict) -> None:
    with pytest.raises(UpstreamError) as raised:
        gemini_schema(schema)

    assert (raised.value.kind, raised.value.status) == ("client", 400)


def test_a_format_of_any_type_is_left_out() -> None:
    assert gemini_schema({"type": "string", "format": ["date"]}) == {"type": "STRING"}


def test_it_refuses_tool_call_arguments_nested_deeper_than_it_can_send() -> None:
    arguments = '{"a": ' + "[" * 300 + "]" * 300 + "}"
    call = {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": arguments}}

    with pytest.raises(UpstreamError) as raised:
        translate_request({"messages": [{"role": "assistant", "content": None, "tool_calls": [call]}]})

    assert raised.value.kind == "client"


async def test_it_posts_to_the_vertex_model_url_with_an_access_token(
    token_server: FakeTokenServer, service_account: str
) -> None:
    provider = _provider(base_url="https://vertex.example.com/", credentials=service_account)

    plain = await provider.prepare(body={"messages": []}, model=MODEL, stream=False)
    streamed = await provider.prepare(body={"messages": []}, model=MODEL, stream=True)

    base = "https://vertex.example.com/v1/projects/fake-project/locations/us-east5/publishers/google/models"
    assert plain.url == f"{base}/gemini-2.5-flash:generateContent"
    assert streamed.url == f"{base}/gemini-2.5-flash:streamGenerateContent?alt=sse"
    assert plain.headers["Authorization"] == "Bearer fake-token-1"


@pytest.mark.parametrize(
    ("location", "host"),
    [("us-east5", "https://us-east5-aiplatform.googleapis.com"), ("global", "https://aiplatform.googleapis.com")],
)
def test_it_finds_the_regional_or_global_endpoint_from_the_location(location: str, host: str) -> None:
    url = _provider(location=location).model_url(MODEL, "generateContent")

    assert (
        url == f"{host}/v1/projects/fake-project/locations/{location}/publishers/google/models/{MODEL}:generateContent"
    )


# --- answers -------------------------------------------------------------------------------------


def test_it_counts_thinking_tokens_as_completion_tokens() -> None:
    answer = translate_response(cassette(GEMINI, "simple")[0].response, model=MODEL)

    assert answer["choices"][0]["message"] == {"role": "assistant", "content": "Olá!"}
    assert answer["choices"][0]["finish_reason"] == "stop"
    assert answer["usage"] == {
        "prompt_tokens": 9,
        "completion_tokens": 26,
        "total_tokens": 35,
        "prompt_tokens_details": {"cached_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": 24},
    }


def test_it_turns_function_calls_into_tool_calls_with_ids_that_carry_the_signature() -> None:
    recorded = cassette(GEMINI, "multi_tool")[0].response
    signature = recorded["candidates"][0]["content"]["parts"][0]["thoughtSignature"]

    answer = translate_response(recorded, model=MODEL)

    first, second = answer["choices"][0]["message"]["tool_calls"]
    assert answer["choices"][0]["finish_reason"] == "tool_calls"
    assert answer["choices"][0]["message"]["content"] is None
    assert (first["function"]["name"], json.loads(first["function"]["arguments"])) == ("add", {"a": 2, "b": 3})
    assert (second["function"]["name"], json.loads(second["function"]["arguments"])) == ("multiply", {"a": 2, "b": 3})
    assert signature_from_tool_call_id(first["id"]) == signature
    assert signature_from_tool_call_id(second["id"]) is None
    assert PORTABLE_ID.match(first["id"])
    assert first["id"] != second["id"]


def test_it_reports_cached_and_tool_prompt_tokens() -> None:
    response = {
        "candidates": [{"content": {"role": "model", "parts": [{"text": "ok"}]}, "finishReason": "STOP"}],
        "usageMetadata": {
            "promptTokenCount": 80,
            "toolUsePromptTokenCount": 5,
            "cachedContentTokenCount": 50,
            "candidatesTokenCount": 1,
        },
    }

    usage = translate_response(response, model=MODEL)["usage"]

    assert (usage["prompt_tokens"], usage["prompt_tokens_details"]["cached_tokens"]) == (85, 50)


@pytest.mark.parametrize(
    ("gemini_reason", "openai_reason"),
    [
        ("STOP", "stop"),
        ("MAX_TOKENS", "length"),
        ("SAFETY", "content_filter"),
        ("RECITATION", "content_filter"),
        ("OTHER", "stop"),
    ],
)
def test_it_maps_finish_reasons(gemini_reason: str, openai_reason: str) -> None:
    response = {"candidates": [{"content": {"parts": [{"text": "x"}]}, "finishReason": gemini_reason}]}

    assert translate_response(response, model=MODEL)["choices"][0]["finish_reason"] == openai_reason


def test_it_answers_a_blocked_prompt_as_filtered_content() -> None:
    response = {"promptFeedback": {"blockReason": "SAFETY"}, "usageMetadata": {"promptTokenCount": 4}}

    answer = translate_response(response, model=MODEL)

    assert answer["choices"][0]["finish_reason"] == "content_filter"
    assert answer["usage"]["prompt_tokens"] == 4


def test_it_leaves_thought_summaries_out_of_the_answer() -> None:
    parts = [{"text": "Let me think about it", "thought": True}, {"text": "42"}]
    response = {"candidates": [{"content": {"parts": parts}, "finishReason": "STOP"}]}

    assert translate_response(response, model=MODEL)["choices"][0]["message"]["content"] == "42"


# --- streams -------------------------------------------------------------------------------------


def test_it_streams_a_recorded_function_call_whole_in_one_delta() -> None:
    body = cassette(GEMINI, "tool_streaming")[0].response_body.encode()

    chunks = decode(GeminiStreamDecoder(model=MODEL), body)

    role, call, finish, usage = chunks
    assert role["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    (delta,) = call["choices"][0]["delta"]["tool_calls"]
    assert delta["index"] == 0
    assert (delta["type"], delta["function"]) == (
        "function",
        {"name": "weather", "arguments": '{"location":"Florence,Italy"}'},
    )
    assert signature_from_tool_call_id(delta["id"]) is not None
    assert finish["choices"][0]["finish_reason"] == "tool_calls"
    assert usage["choices"] == []
    assert (usage["usage"]["prompt_tokens"], usage["usage"]["completion_tokens"]) == (28, 5 + 51)


def test_it_numbers_recorded_parallel_calls_by_index() -> None:
    body = cassette(GEMINI, "multi_tool_streaming")[0].response_body.encode()

    calls = streamed_tool_calls(decode(GeminiStreamDecoder(model=MODEL), body))

    assert [(call["name"], json.loads(call["arguments"])) for call in calls] == [
        ("add", {"a": 2, "b": 3}),
        ("multiply", {"a": 2, "b": 3}),
    ]


def test_it_streams_recorded_text_and_counts_its_thinking() -> None:
    body = cassette(GEMINI, "simple_streaming")[0].response_body.encode()

    chunks = decode(GeminiStreamDecoder(model=MODEL), body)

    assert streamed_text(chunks) == 'Olá! (pronounced "oh-LAH")'
    assert finish_reasons(chunks) == ["stop"]
    assert chunks[-1]["usage"]["completion_tokens"] == 9 + 36
    assert chunks[-1]["usage"]["completion_tokens_details"]["reasoning_tokens"] == 36
    assert len({chunk["id"] for chunk in chunks}) == 1


@pytest.mark.parametrize("name", ["simple_streaming", "tool_streaming", "multi_tool_streaming"])
@pytest.mark.parametrize("turn", [0, -1])
def test_it_decodes_recorded_streams_the_same_in_any_slicing(name: str, turn: int) -> None:
    body = cassette(GEMINI, name)[turn].response_body.encode()

    whole = decode(GeminiStreamDecoder(model=MODEL), body)
    sliced = decode_in_slices(GeminiStreamDecoder(model=MODEL), body, seed=len(name) + turn)

    assert without_volatile_fields(sliced) == without_volatile_fields(whole)


@pytest.mark.parametrize(
    "event",
    [
        [{"error": {"code": 429, "message": "Resource exhausted", "status": "RESOURCE_EXHAUSTED"}}],
        {"error": {"code": 429, "message": "Resource exhausted", "status": "RESOURCE_EXHAUSTED"}},
    ],
)
def test_it_raises_an_error_sent_inside_the_stream_whether_wrapped_in_an_array_or_not(event: dict | list) -> None:
    decoder = GeminiStreamDecoder(model=MODEL)

    with pytest.raises(UpstreamError) as raised:
        decoder.feed(sse(event, separator="\r\n\r\n"))

    assert (raised.value.kind, raised.value.status) == ("rate_limit", 429)


def test_it_raises_when_the_stream_ends_before_a_finish_reason() -> None:
    body = cassette(GEMINI, "simple_streaming")[0].response_body.encode()
    decoder = GeminiStreamDecoder(model=MODEL)
    first_event = body[: body.index(b"\r\n\r\n") + 4]

    assert streamed_text(decoder.feed(first_event)) == "Olá!"
    with pytest.raises(UpstreamError) as raised:
        decoder.finish()
    assert raised.value.kind == "server"


@pytest.mark.parametrize(
    ("status", "body", "kind"),
    [
        (429, b'[{"error": {"code": 429, "message": "Quota exceeded", "status": "RESOURCE_EXHAUSTED"}}]', "rate_limit"),
        (400, b'{"error": {"code": 400, "message": "Quota exceeded", "status": "INVALID_ARGUMENT"}}', "client"),
        (503, b'{"error": {"code": 503, "message": "Quota exceeded", "status": "UNAVAILABLE"}}', "server"),
    ],
)
def test_it_classifies_error_bodies_whether_wrapped_in_an_array_or_not(status: int, body: bytes, kind: str) -> None:
    error = _provider().classify_error(status=status, headers={"Retry-After": "7"}, body=body)

    assert (error.kind, error.status) == (kind, status)
    assert "Quota exceeded" in error.message
