import json

import pytest

from gateway.providers import build_provider
from gateway.providers.base import Provider, ProviderConfig, UpstreamError
from tests.gateway.providers.support import (
    OPENAI,
    cassette,
    decode,
    decode_in_slices,
    finish_reasons,
    sse,
    streamed_text,
    streamed_tool_calls,
)

KEY_ENV = "NEMO_TEST_OPENAI_KEY"


@pytest.fixture
def provider(monkeypatch: pytest.MonkeyPatch) -> Provider:
    monkeypatch.setenv(KEY_ENV, "sk-upstream")
    options = {"base_url": "https://llm.example.com/v1/", "api_key_env": KEY_ENV}
    return build_provider(ProviderConfig(name="backup", type="openai", options=options))


async def test_it_posts_to_chat_completions_with_the_key_from_the_environment(provider: Provider) -> None:
    request = await provider.prepare(body={"messages": []}, model="gpt-4o", stream=False)

    assert request.url == "https://llm.example.com/v1/chat/completions"
    assert request.headers["Authorization"] == "Bearer sk-upstream"


async def test_it_replaces_the_model_and_passes_unknown_fields_through(provider: Provider) -> None:
    body = {"model": "my-alias", "messages": [{"role": "user", "content": "hi"}], "logit_bias": {"50256": -100}}

    request = await provider.prepare(body=body, model="gpt-4o-2024-08-06", stream=False)

    assert json.loads(request.body) == {**body, "model": "gpt-4o-2024-08-06"}


async def test_it_always_asks_for_usage_on_streams(provider: Provider) -> None:
    body = {"messages": [], "stream": True, "stream_options": {"include_obfuscation": False}}

    request = await provider.prepare(body=body, model="gpt-4o", stream=True)

    sent = json.loads(request.body)
    assert sent["stream"] is True
    assert sent["stream_options"] == {"include_obfuscation": False, "include_usage": True}


async def test_it_drops_the_stream_fields_from_a_plain_call(provider: Provider) -> None:
    body = {"messages": [], "stream": True, "stream_options": {"include_usage": True}}

    request = await provider.prepare(body=body, model="gpt-4o", stream=False)

    assert "stream" not in json.loads(request.body)
    assert "stream_options" not in json.loads(request.body)


async def test_it_shortens_over_long_tool_call_ids_the_same_way_on_call_and_result(provider: Provider) -> None:
    long_id = "call_" + "a" * 24 + "_sig_" + "b" * 300
    call = {"id": long_id, "type": "function", "function": {"name": "weather", "arguments": "{}"}}
    body = {
        "messages": [
            {"role": "assistant", "content": None, "tool_calls": [call]},
            {"role": "tool", "tool_call_id": long_id, "content": "40 C"},
        ]
    }

    request = await provider.prepare(body=body, model="gpt-4o", stream=False)

    assistant, tool = json.loads(request.body)["messages"]
    assert len(assistant["tool_calls"][0]["id"]) <= 40
    assert tool["tool_call_id"] == assistant["tool_calls"][0]["id"]


async def test_it_keeps_tool_call_ids_that_fit(provider: Provider) -> None:
    recorded = cassette(OPENAI, "tool")[1].request

    request = await provider.prepare(body=recorded, model="gpt-4o", stream=False)

    assert json.loads(request.body)["messages"] == recorded["messages"]


def test_it_returns_the_recorded_answer_as_it_came(provider: Provider) -> None:
    recorded = cassette(OPENAI, "multi_tool")[0]

    answer = provider.parse_response(body=recorded.response_body.encode(), model="gpt-4o")

    assert answer == recorded.response


def test_it_decodes_the_recorded_parallel_tool_call_stream(provider: Provider) -> None:
    body = cassette(OPENAI, "multi_tool_streaming")[0].response_body.encode()

    chunks = decode(provider.stream_decoder(model="gpt-4o", body={}), body)

    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    assert streamed_tool_calls(chunks) == [
        {"id": "call_ehIWdjL1abZk1h8FWGLQ0Hie", "name": "add", "arguments": '{"a": 2, "b": 3}'},
        {"id": "call_fBSgA47J5VeONggizTIvl7AH", "name": "multiply", "arguments": '{"a": 2, "b": 3}'},
    ]
    assert finish_reasons(chunks) == ["tool_calls"]
    assert chunks[-1]["choices"] == []
    assert chunks[-1]["usage"]["total_tokens"] == 156


@pytest.mark.parametrize("name", ["simple_streaming", "tool_streaming", "multi_tool_streaming"])
def test_it_decodes_recorded_streams_the_same_in_any_slicing(provider: Provider, name: str) -> None:
    body = cassette(OPENAI, name)[0].response_body.encode()

    whole = decode(provider.stream_decoder(model="gpt-4o", body={}), body)
    sliced = decode_in_slices(provider.stream_decoder(model="gpt-4o", body={}), body, seed=len(name))

    assert sliced == whole


def test_it_decodes_a_stream_separated_by_crlf(provider: Provider) -> None:
    body = cassette(OPENAI, "simple_streaming")[0].response_body.replace("\n", "\r\n").encode()

    chunks = decode(provider.stream_decoder(model="gpt-4o", body={}), body)

    assert streamed_text(chunks) == "Olá!"
    assert chunks[-1]["usage"]["completion_tokens"] == 2


def _chunk(delta: dict, finish_reason: str | None = None, **extra: object) -> dict:
    return {"id": "c1", "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}], **extra}


def test_it_moves_usage_sent_beside_choices_to_a_final_chunk_of_its_own(provider: Provider) -> None:
    usage = {"prompt_tokens": 5, "completion_tokens": 1, "total_tokens": 6}
    body = sse(_chunk({"role": "assistant", "content": "Hi"}), _chunk({}, "stop", usage=usage), "[DONE]")

    chunks = decode(provider.stream_decoder(model="gpt-4o", body={}), body)

    assert "usage" not in chunks[1]
    assert chunks[-1] == {"id": "c1", "choices": [], "usage": usage}


def test_it_reads_bytes_that_are_not_utf8_in_an_event_as_replacement_characters(provider: Provider) -> None:
    body = b'data: {"id": "c1", "choices": [{"index": 0, "delta": {"content": "caf\xe9"}, "finish_reason": "stop"}]}'
    body += b"\n\ndata: [DONE]\n\n"

    chunks = decode(provider.stream_decoder(model="gpt-4o", body={}), body)

    assert chunks[0]["choices"][0]["delta"]["content"] == "caf\ufffd"


def test_it_makes_up_no_usage_when_the_server_sends_none(provider: Provider) -> None:
    body = sse(_chunk({"content": "Hi"}, "stop"), "[DONE]")

    chunks = decode(provider.stream_decoder(model="gpt-4o", body={}), body)

    assert chunks == [_chunk({"content": "Hi"}, "stop")]


def test_it_raises_when_the_stream_ends_before_the_answer_finished(provider: Provider) -> None:
    events = cassette(OPENAI, "simple_streaming")[0].response_body.encode().split(b"\n\n")
    decoder = provider.stream_decoder(model="gpt-4o", body={})
    # The role chunk and both pieces of text, then nothing: no finish_reason, no usage.
    decoder.feed(b"\n\n".join(events[:3]) + b"\n\n")

    with pytest.raises(UpstreamError) as raised:
        decoder.finish()

    assert raised.value.kind == "server"


def test_it_raises_an_error_sent_inside_the_stream(provider: Provider) -> None:
    decoder = provider.stream_decoder(model="gpt-4o", body={})

    with pytest.raises(UpstreamError) as raised:
        decoder.feed(b'data: {"error": {"message": "The server had an error", "type": "server_error"}}\n\n')

    assert (raised.value.kind, raised.value.message) == ("server", "The server had an error")


@pytest.mark.parametrize(
    ("status", "body", "kind", "message"),
    [
        (400, b'{"error": {"message": "Bad messages", "type": "invalid_request_error"}}', "client", "Bad messages"),
        (429, b'{"error": {"message": "Slow down", "type": "rate_limit_error"}}', "rate_limit", "Slow down"),
        (500, b'{"error": {"message": "Boom", "type": "server_error"}}', "server", "Boom"),
        (401, b'{"error": "bad key"}', "server", "bad key"),
        (502, b"<html>Bad gateway</html>", "server", "<html>Bad gateway</html>"),
    ],
)
def test_it_classifies_error_bodies(provider: Provider, status: int, body: bytes, kind: str, message: str) -> None:
    error = provider.classify_error(status=status, headers={}, body=body)

    assert (error.kind, error.status, error.message) == (kind, status, message)


def _events(provider: Provider, body: bytes, *, include_usage: bool) -> list:
    decoder = provider.stream_decoder(model="gpt-4o", body={"stream_options": {"include_usage": include_usage}})
    return decoder.feed_events(body) + decoder.finish_events()


def test_recorded_chunks_go_on_as_their_own_bytes_when_the_client_asked_for_usage(provider: Provider) -> None:
    body = cassette(OPENAI, "simple_streaming")[0].response_body.encode()
    sent = [line + b"\n\n" for line in body.split(b"\n\n") if line.startswith(b"data: {")]

    events = _events(provider, body, include_usage=True)

    assert [encoded for _, encoded in events] == sent
    assert [json.loads(encoded[6:]) for _, encoded in events[:-1]] == [chunk for chunk, _ in events[:-1]]


def test_chunks_lose_the_null_usage_the_client_did_not_ask_for_and_are_encoded_again(provider: Provider) -> None:
    body = cassette(OPENAI, "simple_streaming")[0].response_body.encode()

    events = _events(provider, body, include_usage=False)

    assert [encoded for _, encoded in events[:-1]] == [None] * (len(events) - 1)
    assert all("usage" not in chunk for chunk, _ in events[:-1])
    assert events[-1][0]["usage"]["total_tokens"] == 22 and events[-1][1] is not None


def test_a_chunk_that_had_to_change_has_no_bytes_of_its_own(provider: Provider) -> None:
    usage = {"prompt_tokens": 5, "completion_tokens": 1, "total_tokens": 6}
    # The usage beside choices is taken off its chunk and sent apart, on a chunk made here.
    body = sse(_chunk({"content": "Hi"}), _chunk({}, "stop", usage=usage), "[DONE]")

    events = _events(provider, body, include_usage=True)

    assert events[0][1] == body.split(b"\n\n")[0] + b"\n\n"
    assert [encoded for _, encoded in events[1:]] == [None, None]


def test_an_event_of_several_data_lines_or_of_bytes_that_are_not_utf8_is_encoded_again(provider: Provider) -> None:
    body = b'data: {"id": "c1",\ndata: "choices": [{"index": 0, "delta": {"content": "a"}, "finish_reason": null}]}\n\n'
    body += b'data: {"id": "c1", "choices": [{"index": 0, "delta": {"content": "caf\xe9"}, "finish_reason": "stop"}]}'
    body += b"\n\ndata: [DONE]\n\n"

    events = _events(provider, body, include_usage=True)

    assert [chunk["choices"][0]["delta"]["content"] for chunk, _ in events] == ["a", "caf\ufffd"]
    assert [encoded for _, encoded in events] == [None, None]
