"""Each provider against its fake upstream over real HTTP: answers, and every fault classified."""

import email.utils
import json
import time
import urllib.request

import aiohttp
import pytest
from openai.types.chat import ChatCompletion, ChatCompletionChunk

from gateway.providers.base import Provider, UpstreamError
from tests.fakes import (
    DieBeforeFirstByte,
    DieMidway,
    FakeAnthropic,
    FakeGemini,
    FakeOpenAI,
    FakeUpstream,
    Hang,
    Raw,
    Reply,
    Reset,
    Status,
    StreamError,
)
from tests.gateway.providers.support import (
    CLAUDE,
    GEMINI,
    OPENAI,
    cassette,
    finish_reasons,
    streamed_text,
    streamed_tool_calls,
)

MODELS = {"openai": "gpt-4o", "gemini": "gemini-2.5-flash", "anthropic": "claude-3-7-sonnet@20250219"}
RECORDINGS = {"openai": OPENAI, "gemini": GEMINI, "anthropic": CLAUDE}
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "weather",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
        },
    },
    {
        "type": "function",
        "function": {
            "name": "local_time",
            "parameters": {"type": "object", "properties": {"zone": {"type": "string"}}, "required": ["zone"]},
        },
    },
]
QUESTION = {"messages": [{"role": "user", "content": "What is the weather in Rome?"}]}


class Upstream:
    """A provider wired to its fake, with the calls a test makes."""

    def __init__(self, name: str, provider: Provider, fake: FakeUpstream, session: aiohttp.ClientSession) -> None:
        self.name = name
        self.provider = provider
        self.fake = fake
        self.model = MODELS[name]
        self.session = session

    async def complete(self, body: dict, *, timeout_s: float = 5) -> dict:
        return await self.provider.complete(self.session, body=body, model=self.model, timeout_s=timeout_s)

    async def stream(self, body: dict, *, timeout_s: float = 5) -> list[dict]:
        chunks = await self.provider.stream(self.session, body=body, model=self.model, timeout_s=timeout_s)
        return [chunk async for chunk in chunks]


@pytest.fixture(params=list(MODELS))
def upstream(request: pytest.FixtureRequest, session: aiohttp.ClientSession) -> Upstream:
    provider = request.getfixturevalue(f"{request.param}_provider")
    fake = request.getfixturevalue(f"fake_{request.param}")
    return Upstream(request.param, provider, fake, session)


async def _error(call: object) -> UpstreamError:
    with pytest.raises(UpstreamError) as raised:
        await call
    return raised.value


# --- answers -------------------------------------------------------------------------------------


async def test_it_answers_a_question(upstream: Upstream) -> None:
    answer = await upstream.complete(QUESTION)

    assert answer["choices"][0]["message"]["content"] == "Fake answer to: What is the weather in Rome?"
    assert answer["choices"][0]["finish_reason"] == "stop"
    assert answer["usage"]["prompt_tokens"] > 0
    assert upstream.fake.count == 1


async def test_it_streams_an_answer_that_ends_with_its_usage(upstream: Upstream) -> None:
    chunks = await upstream.stream({**QUESTION, "stream": True})

    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    assert streamed_text(chunks) == "Fake answer to: What is the weather in Rome?"
    assert finish_reasons(chunks) == ["stop"]
    assert chunks[-1]["choices"] == []
    assert chunks[-1]["usage"]["completion_tokens"] > 0


async def test_it_calls_a_tool_then_answers_with_its_result(upstream: Upstream) -> None:
    first = await upstream.complete({**QUESTION, "tools": TOOLS})
    assistant = first["choices"][0]["message"]
    (call,) = assistant["tool_calls"]
    result = {"role": "tool", "tool_call_id": call["id"], "content": "40 C"}

    chunks = await upstream.stream({**QUESTION, "tools": TOOLS, "messages": [*QUESTION["messages"], assistant, result]})

    assert (call["function"]["name"], json.loads(call["function"]["arguments"])) == ("weather", {"city": "example"})
    assert first["choices"][0]["finish_reason"] == "tool_calls"
    assert "40 C" in streamed_text(chunks)
    assert upstream.fake.count == 2


async def test_it_streams_parallel_tool_calls_under_their_own_indexes(upstream: Upstream) -> None:
    upstream.fake.script(Reply(parallel=True))

    chunks = await upstream.stream({**QUESTION, "tools": TOOLS})

    calls = streamed_tool_calls(chunks)
    assert [(call["name"], json.loads(call["arguments"])) for call in calls] == [
        ("weather", {"city": "example"}),
        ("local_time", {"zone": "example"}),
    ]
    assert len({call["id"] for call in calls}) == 2
    assert finish_reasons(chunks) == ["tool_calls"]


async def test_a_replayed_recorded_answer_is_what_the_openai_sdk_expects(upstream: Upstream) -> None:
    recorded = cassette(RECORDINGS[upstream.name], "tool")[0]
    upstream.fake.script(Raw(recorded.response_body))

    answer = ChatCompletion.model_validate(await upstream.complete(QUESTION))

    (call,) = answer.choices[0].message.tool_calls or []
    assert call.function.name == "weather"
    assert json.loads(call.function.arguments)["location"].startswith("Florence")
    assert answer.choices[0].finish_reason == "tool_calls"


async def test_a_replayed_recorded_stream_is_what_the_openai_sdk_expects(upstream: Upstream) -> None:
    recorded = cassette(RECORDINGS[upstream.name], "tool_streaming")[0]
    upstream.fake.script(Raw(recorded.response_body, content_type="text/event-stream"))

    chunks = await upstream.stream(QUESTION)

    assert all(ChatCompletionChunk.model_validate(chunk) for chunk in chunks)
    (call,) = streamed_tool_calls(chunks)
    assert call["name"] == "weather"
    assert json.loads(call["arguments"])["location"].startswith("Florence")
    assert finish_reasons(chunks) == ["tool_calls"]
    assert chunks[-1]["usage"]["completion_tokens"] > 0


async def test_a_vertex_provider_sends_its_access_token(
    fake_gemini: FakeGemini, gemini_provider: Provider, session: aiohttp.ClientSession
) -> None:
    await gemini_provider.complete(session, body=QUESTION, model="gemini-2.5-flash", timeout_s=5)

    (received,) = fake_gemini.requests
    assert received.headers["Authorization"] == "Bearer fake-token-1"
    assert received.path.endswith("/publishers/google/models/gemini-2.5-flash:generateContent")


async def test_the_openai_provider_sends_its_api_key_and_asks_for_stream_usage(
    fake_openai: FakeOpenAI, openai_provider: Provider, session: aiohttp.ClientSession
) -> None:
    chunks = await openai_provider.stream(session, body=QUESTION, model="gpt-4o", timeout_s=5)
    [chunk async for chunk in chunks]

    (received,) = fake_openai.requests
    assert received.headers["Authorization"] == "Bearer sk-upstream-test"
    assert received.json["stream_options"] == {"include_usage": True}


async def test_claude_on_vertex_gets_its_version_and_no_model(
    fake_anthropic: FakeAnthropic, anthropic_provider: Provider, session: aiohttp.ClientSession
) -> None:
    await anthropic_provider.complete(session, body=QUESTION, model="claude-3-7-sonnet@20250219", timeout_s=5)

    (received,) = fake_anthropic.requests
    assert received.json["anthropic_version"] == "vertex-2023-10-16"
    assert "model" not in received.json


# --- faults --------------------------------------------------------------------------------------


async def test_an_upstream_that_never_answers_times_out(upstream: Upstream) -> None:
    upstream.fake.script(Hang(), Hang())

    plain = await _error(upstream.complete(QUESTION, timeout_s=0.2))
    streamed = await _error(upstream.stream(QUESTION, timeout_s=0.2))

    assert (plain.kind, streamed.kind) == ("timeout", "timeout")
    assert (plain.outcome, streamed.outcome) == ("timeout", "timeout")


@pytest.mark.parametrize(
    ("status", "kind", "outcome"),
    [(500, "server", "500"), (503, "server", "503"), (429, "rate_limit", "429"), (400, "client", "400")],
)
async def test_an_error_status_is_classified_for_plain_and_streamed_calls(
    upstream: Upstream, status: int, kind: str, outcome: str
) -> None:
    upstream.fake.script(Status(status), Status(status))

    plain = await _error(upstream.complete(QUESTION))
    streamed = await _error(upstream.stream(QUESTION))

    assert (plain.kind, plain.status, plain.outcome) == (kind, status, outcome)
    assert (streamed.kind, streamed.status, streamed.outcome) == (kind, status, outcome)
    assert "fake upstream error" in plain.message
    assert upstream.fake.count == 2


async def test_retry_after_is_read_in_seconds(upstream: Upstream) -> None:
    upstream.fake.script(Status(503, retry_after="7"))

    error = await _error(upstream.complete(QUESTION))

    assert error.retry_after == 7.0


async def test_retry_after_is_read_as_an_http_date(upstream: Upstream) -> None:
    upstream.fake.script(Status(429, retry_after=email.utils.formatdate(time.time() + 30, usegmt=True)))

    error = await _error(upstream.stream(QUESTION))

    assert error.retry_after == pytest.approx(30, abs=2)


async def test_a_reset_connection_is_a_connection_error(upstream: Upstream) -> None:
    upstream.fake.script(Reset(), Reset())

    plain = await _error(upstream.complete(QUESTION))
    streamed = await _error(upstream.stream(QUESTION))

    assert (plain.kind, streamed.kind) == ("connect", "connect")


async def test_a_stream_that_dies_before_its_first_byte_fails_before_anything_is_returned(
    upstream: Upstream,
) -> None:
    upstream.fake.script(DieBeforeFirstByte())

    error = await _error(upstream.provider.stream(upstream.session, body=QUESTION, model=upstream.model, timeout_s=5))

    assert error.kind == "connect"


async def test_a_stream_that_dies_midway_breaks_after_its_first_chunks(upstream: Upstream) -> None:
    upstream.fake.script(DieMidway(events=1))
    chunks = await upstream.provider.stream(upstream.session, body=QUESTION, model=upstream.model, timeout_s=5)
    received = []

    with pytest.raises(UpstreamError) as raised:
        async for chunk in chunks:
            received.append(chunk)

    assert received[0]["choices"][0]["delta"]["role"] == "assistant"
    assert finish_reasons(received) == []
    assert raised.value.kind == "connect"


async def test_a_plain_answer_cut_midway_is_a_connection_error(upstream: Upstream) -> None:
    upstream.fake.script(DieMidway(), DieBeforeFirstByte())

    halfway = await _error(upstream.complete(QUESTION))
    at_once = await _error(upstream.complete(QUESTION))

    assert (halfway.kind, at_once.kind) == ("connect", "connect")


async def test_an_error_sent_inside_the_stream_breaks_it_as_a_server_error(upstream: Upstream) -> None:
    upstream.fake.script(StreamError(status=503, events=2))
    chunks = await upstream.provider.stream(upstream.session, body=QUESTION, model=upstream.model, timeout_s=5)
    received = []

    with pytest.raises(UpstreamError) as raised:
        async for chunk in chunks:
            received.append(chunk)

    assert received[0]["choices"][0]["delta"]["role"] == "assistant"
    assert raised.value.kind == "server"


def test_a_fake_serves_sync_callers_from_its_own_thread() -> None:
    with FakeOpenAI() as fake:
        request = urllib.request.Request(
            f"{fake.base_url}/chat/completions",
            data=json.dumps({"model": "gpt-4o", **QUESTION}).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=5) as response:
            answer = json.load(response)

    assert answer["choices"][0]["message"]["content"] == "Fake answer to: What is the weather in Rome?"
    assert fake.count == 1
