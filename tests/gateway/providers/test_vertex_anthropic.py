import json

import pytest

from gateway.providers import build_provider
from gateway.providers.base import Provider, ProviderConfig, UpstreamError
from gateway.providers.vertex_anthropic import AnthropicStreamDecoder, translate_request, translate_response
from tests.fakes import FakeTokenServer
from tests.gateway.providers.support import (
    CLAUDE,
    OPENAI,
    cassette,
    decode,
    decode_in_slices,
    finish_reasons,
    streamed_text,
    streamed_tool_calls,
    tool_call_deltas,
)

MODEL = "claude-3-7-sonnet@20250219"
WEATHER = {
    "type": "function",
    "function": {"name": "weather", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}},
}


def _provider(**options: str) -> Provider:
    options = {"project": "fake-project", "location": "us-east5", **options}
    return build_provider(ProviderConfig(name="claude", type="vertex_anthropic", options=options))


def _call(call_id: str, name: str = "weather", arguments: str = '{"city": "Rome"}') -> dict:
    return {"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}


# --- requests ------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["simple", "tool"])
def test_it_translates_the_recorded_openai_request_into_the_recorded_claude_request(name: str) -> None:
    openai_request = cassette(OPENAI, name)[0].request

    assert translate_request(openai_request) == cassette(CLAUDE, name)[0].request


def test_it_sends_tool_results_back_like_the_recording() -> None:
    claude = cassette(CLAUDE, "tool")
    assistant = translate_response(claude[0].response, model=MODEL)["choices"][0]["message"]
    (call,) = assistant["tool_calls"]
    first_request = cassette(OPENAI, "tool")[0].request
    tool_message = {"role": "tool", "tool_call_id": call["id"], "content": "40 C"}

    next_request = {**first_request, "messages": [*first_request["messages"], assistant, tool_message]}

    assert translate_request(next_request) == claude[1].request


async def test_it_posts_to_raw_predict_without_the_model_in_the_body(
    token_server: FakeTokenServer, service_account: str
) -> None:
    provider = _provider(base_url="https://vertex.example.com", credentials=service_account)
    body = {"model": "claude", "messages": [{"role": "user", "content": "hi"}], "stream": True}

    plain = await provider.prepare(body=body, model=MODEL, stream=False)
    streamed = await provider.prepare(body=body, model=MODEL, stream=True)

    base = "https://vertex.example.com/v1/projects/fake-project/locations/us-east5/publishers/anthropic/models"
    assert plain.url == f"{base}/{MODEL}:rawPredict"
    assert streamed.url == f"{base}/{MODEL}:streamRawPredict"
    assert plain.headers["Authorization"] == "Bearer fake-token-1"
    assert "model" not in json.loads(plain.body)
    assert "stream" not in json.loads(plain.body)
    assert json.loads(streamed.body)["stream"] is True


def test_it_merges_consecutive_tool_results_into_one_user_turn() -> None:
    body = {
        "messages": [
            {"role": "user", "content": "Add and multiply 2 and 3"},
            {"role": "assistant", "content": "", "tool_calls": [_call("toolu_1", "add"), _call("toolu_2", "multiply")]},
            {"role": "tool", "tool_call_id": "toolu_1", "content": "5"},
            {"role": "tool", "tool_call_id": "toolu_2", "content": "6"},
            {"role": "user", "content": "Thanks, and now?"},
        ]
    }

    messages = translate_request(body)["messages"]

    assert [message["role"] for message in messages] == ["user", "assistant", "user"]
    assert [block["type"] for block in messages[1]["content"]] == ["tool_use", "tool_use"]
    assert messages[2]["content"] == [
        {"type": "tool_result", "tool_use_id": "toolu_1", "content": [{"type": "text", "text": "5"}]},
        {"type": "tool_result", "tool_use_id": "toolu_2", "content": [{"type": "text", "text": "6"}]},
        {"type": "text", "text": "Thanks, and now?"},
    ]


def test_it_makes_tool_call_ids_from_other_wire_formats_acceptable_to_claude() -> None:
    body = {
        "messages": [
            {"role": "assistant", "content": None, "tool_calls": [_call("chatcmpl-tool:0.1")]},
            {"role": "tool", "tool_call_id": "chatcmpl-tool:0.1", "content": "40 C"},
        ]
    }

    assistant, results = translate_request(body)["messages"]

    assert assistant["content"][0]["id"] == "chatcmpl-tool_0_1"
    assert results["content"][0]["tool_use_id"] == "chatcmpl-tool_0_1"


def test_it_asks_for_a_default_max_tokens_when_the_client_gives_none() -> None:
    assert translate_request({"messages": []})["max_tokens"] == 4096


def test_it_maps_sampling_settings() -> None:
    body = {"messages": [], "max_completion_tokens": 300, "stop": ["END"], "temperature": 1.6, "top_p": 0.5}

    payload = translate_request(body)

    assert (payload["max_tokens"], payload["stop_sequences"], payload["top_p"]) == (300, ["END"], 0.5)
    assert payload["temperature"] == 1.0


@pytest.mark.parametrize(
    ("tool_choice", "parallel", "expected"),
    [
        (None, None, {"type": "auto", "disable_parallel_tool_use": False}),
        ("required", False, {"type": "any", "disable_parallel_tool_use": True}),
        ("none", None, {"type": "none"}),
        (
            {"type": "function", "function": {"name": "weather"}},
            None,
            {"type": "tool", "name": "weather", "disable_parallel_tool_use": False},
        ),
    ],
)
def test_it_maps_tool_choice(tool_choice: str | dict | None, parallel: bool | None, expected: dict) -> None:
    body = {"messages": [], "tools": [WEATHER], "tool_choice": tool_choice, "parallel_tool_calls": parallel}

    payload = translate_request(body)

    assert payload["tool_choice"] == expected
    assert payload["tools"] == [{"name": "weather", "input_schema": WEATHER["function"]["parameters"]}]


def test_it_sends_images_as_base64_or_url_sources() -> None:
    content = [
        {"type": "image_url", "image_url": {"url": "data:image/jpeg;base64,/9j/4AAQ"}},
        {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}},
        {"type": "text", "text": "Same cat?"},
    ]

    blocks = translate_request({"messages": [{"role": "user", "content": content}]})["messages"][0]["content"]

    assert blocks == [
        {"type": "image", "source": {"type": "base64", "media_type": "image/jpeg", "data": "/9j/4AAQ"}},
        {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.png"}},
        {"type": "text", "text": "Same cat?"},
    ]


def test_it_refuses_a_content_part_it_cannot_translate() -> None:
    content = [{"type": "input_audio", "input_audio": {"data": "AAAA", "format": "wav"}}]

    with pytest.raises(UpstreamError) as raised:
        translate_request({"messages": [{"role": "user", "content": content}]})

    assert raised.value.kind == "client"


# --- answers -------------------------------------------------------------------------------------


def test_it_keeps_claudes_tool_use_id_as_the_tool_call_id() -> None:
    answer = translate_response(cassette(CLAUDE, "tool")[0].response, model=MODEL)

    choice = answer["choices"][0]
    assert choice["message"]["content"] == "I'll get the current weather information for Florence, Italy for you."
    assert choice["message"]["tool_calls"] == [
        {
            "id": "toolu_vrtx_01PKrjavVyDh3fufyVCkCJ49",
            "type": "function",
            "function": {"name": "weather", "arguments": '{"location":"Florence,Italy"}'},
        }
    ]
    assert choice["finish_reason"] == "tool_calls"
    assert (answer["usage"]["prompt_tokens"], answer["usage"]["completion_tokens"]) == (394, 68)


def test_it_counts_cache_reads_and_writes_as_prompt_tokens() -> None:
    response = {
        "content": [{"type": "text", "text": "ok"}],
        "stop_reason": "max_tokens",
        "usage": {
            "input_tokens": 10,
            "cache_read_input_tokens": 100,
            "cache_creation_input_tokens": 20,
            "output_tokens": 3,
        },
    }

    answer = translate_response(response, model=MODEL)

    assert answer["usage"]["prompt_tokens"] == 130
    assert answer["usage"]["prompt_tokens_details"]["cached_tokens"] == 100
    assert answer["choices"][0]["finish_reason"] == "length"


# --- streams -------------------------------------------------------------------------------------


def test_it_streams_input_json_fragments_under_one_tool_call() -> None:
    body = cassette(CLAUDE, "tool_streaming")[0].response_body.encode()

    chunks = decode(AnthropicStreamDecoder(model=MODEL), body)

    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert streamed_text(chunks).startswith("I'll help you check the weather in Florence")
    assert tool_call_deltas(chunks)[0] == {
        "index": 0,
        "id": "toolu_vrtx_01JhPy9eXqgjLWmUpoCiEkCs",
        "type": "function",
        "function": {"name": "weather", "arguments": ""},
    }
    assert streamed_tool_calls(chunks) == [
        {"id": "toolu_vrtx_01JhPy9eXqgjLWmUpoCiEkCs", "name": "weather", "arguments": '{"location": "Florence,Italy"}'}
    ]
    assert finish_reasons(chunks) == ["tool_calls"]
    assert chunks[-1]["choices"] == []
    assert (chunks[-1]["usage"]["prompt_tokens"], chunks[-1]["usage"]["completion_tokens"]) == (394, 76)


def test_it_streams_recorded_text_with_padded_data_lines() -> None:
    body = cassette(CLAUDE, "simple_streaming")[0].response_body.encode()

    chunks = decode(AnthropicStreamDecoder(model=MODEL), body)

    assert streamed_text(chunks) == "Olá! Como posso ajudar você hoje?"
    assert finish_reasons(chunks) == ["stop"]
    assert chunks[-1]["usage"]["completion_tokens"] == 16
    assert {chunk["id"] for chunk in chunks} == {"chatcmpl-msg_vrtx_01LcEncTtD79dxfjPVCHda3Q"}


@pytest.mark.parametrize("name", ["simple_streaming", "tool_streaming"])
@pytest.mark.parametrize("turn", [0, -1])
def test_it_decodes_recorded_streams_the_same_in_any_slicing(name: str, turn: int) -> None:
    body = cassette(CLAUDE, name)[turn].response_body.encode()

    whole = decode(AnthropicStreamDecoder(model=MODEL), body)
    sliced = decode_in_slices(AnthropicStreamDecoder(model=MODEL), body, seed=len(name) + turn)

    assert [chunk["choices"] for chunk in sliced] == [chunk["choices"] for chunk in whole]
    assert sliced[-1]["usage"] == whole[-1]["usage"]


def test_it_raises_an_overloaded_error_event_as_a_server_error() -> None:
    body = cassette(CLAUDE, "simple_streaming")[0].response_body.encode()
    opening = body[: body.index(b"event: content_block_delta")]
    error = b'event: error\ndata: {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}\n\n'
    decoder = AnthropicStreamDecoder(model=MODEL)
    decoder.feed(opening)

    with pytest.raises(UpstreamError) as raised:
        decoder.feed(error)

    assert (raised.value.kind, raised.value.status) == ("server", 529)
    assert "overloaded_error" in raised.value.message


def test_it_raises_when_the_stream_ends_before_message_stop() -> None:
    body = cassette(CLAUDE, "simple_streaming")[0].response_body.encode()
    decoder = AnthropicStreamDecoder(model=MODEL)
    decoder.feed(body[: body.index(b"event: message_delta")])

    with pytest.raises(UpstreamError) as raised:
        decoder.finish()

    assert raised.value.kind == "server"


@pytest.mark.parametrize(
    ("status", "body", "kind", "message"),
    [
        (
            529,
            b'{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}',
            "server",
            "overloaded_error: Overloaded",
        ),
        (
            429,
            b'{"type":"error","error":{"type":"rate_limit_error","message":"Slow down"}}',
            "rate_limit",
            "rate_limit_error: Slow down",
        ),
        (
            400,
            b'{"type":"error","error":{"type":"invalid_request_error","message":"Bad"}}',
            "client",
            "invalid_request_error: Bad",
        ),
        (
            429,
            b'{"error":{"code":429,"message":"Quota exceeded","status":"RESOURCE_EXHAUSTED"}}',
            "rate_limit",
            "RESOURCE_EXHAUSTED: Quota exceeded",
        ),
    ],
)
def test_it_classifies_claude_and_vertex_error_bodies(status: int, body: bytes, kind: str, message: str) -> None:
    error = _provider().classify_error(status=status, headers={}, body=body)

    assert (error.kind, error.status, error.message) == (kind, status, message)
