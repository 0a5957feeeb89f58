import asyncio
import contextlib
import json
from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp import web

from gateway.providers.base import (
    Provider,
    ProviderConfig,
    StreamDecoder,
    UpstreamError,
    UpstreamRequest,
    classify_status,
)


class SlowToPrepare(Provider):
    """A provider whose credentials take forever, as behind a stuck token endpoint."""

    def credentials_ready(self) -> bool:
        return False

    async def prepare(self, *, body: dict, model: str, stream: bool, output_cap: int | None = None) -> UpstreamRequest:
        await asyncio.sleep(10)
        raise AssertionError("the deadline should have passed")

    def stream_decoder(self, *, model: str, body: dict) -> StreamDecoder:
        return StreamDecoder()


async def test_the_deadline_covers_preparing_the_request() -> None:
    provider = SlowToPrepare(ProviderConfig(name="slow", type="test"))

    async with aiohttp.ClientSession() as session:
        with pytest.raises(UpstreamError) as plain:
            await provider.complete(session, body={}, model="m", timeout_s=0.05)
        with pytest.raises(UpstreamError) as streamed:
            await provider.stream(session, body={}, model="m", timeout_s=0.05)

    assert (plain.value.kind, streamed.value.kind) == ("timeout", "timeout")


async def test_a_cancellation_from_outside_is_not_taken_for_the_deadline() -> None:
    """A task cancelled while its stream starts (its client left) is cancelled, not timed out."""
    provider = SlowToPrepare(ProviderConfig(name="slow", type="test"))

    async with aiohttp.ClientSession() as session:
        starting = asyncio.ensure_future(provider.stream(session, body={}, model="m", timeout_s=5))
        await asyncio.sleep(0.05)
        starting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await starting


async def test_the_deadline_takes_back_only_its_own_cancellation() -> None:
    """A task that had been cancelled once before its stream timed out: the timeout is told
    apart from that cancellation, and the task's count of cancellations is left as it was."""
    provider = SlowToPrepare(ProviderConfig(name="slow", type="test"))

    async def cancelled_before_starting() -> int:
        task = asyncio.current_task()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.sleep(1)
        with pytest.raises(UpstreamError):
            async with aiohttp.ClientSession() as session:
                await provider.stream(session, body={}, model="m", timeout_s=0.05)
        return task.cancelling()

    assert await asyncio.ensure_future(cancelled_before_starting()) == 1


@pytest.mark.parametrize(
    ("status", "kind", "retryable", "outcome"),
    [
        (401, "server", True, "401"),
        (403, "server", True, "403"),
        (404, "server", True, "404"),
        (400, "client", False, "400"),
        (422, "client", False, "422"),
        (408, "timeout", True, "timeout"),
    ],
)
def test_only_a_problem_with_the_request_itself_stops_the_chain(
    status: int, kind: str, retryable: bool, outcome: str
) -> None:
    error = classify_status(status, {}, "upstream said no")

    assert (error.kind, error.retryable, error.outcome) == (kind, retryable, outcome)


class Plain(Provider):
    """Credentials at hand: the call runs on aiohttp's timer alone."""

    def __init__(self, url: str) -> None:
        super().__init__(ProviderConfig(name="plain", type="test"))
        self.url = url

    async def prepare(self, *, body: dict, model: str, stream: bool, output_cap: int | None = None) -> UpstreamRequest:
        return UpstreamRequest(url=self.url, headers={}, body=b"{}")

    def parse_response(self, *, body: bytes, model: str) -> dict:
        raise AssertionError("the deadline should have passed")


@contextlib.asynccontextmanager
async def serving(path: str, handler) -> AsyncIterator[str]:
    """An aiohttp server on a free port that answers POST ``path`` with ``handler``: its URL."""
    app = web.Application()
    app.router.add_post(path, handler)
    runner = web.AppRunner(app, shutdown_timeout=0.1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}"
    finally:
        await runner.cleanup()


async def test_the_deadline_covers_an_answer_whose_body_stalls() -> None:
    async def headers_then_nothing(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "application/json", "Content-Length": "100"})
        await response.prepare(request)
        await response.write(b'{"id": ')
        await asyncio.sleep(10)
        return response

    async with serving("/", headers_then_nothing) as url, aiohttp.ClientSession() as session:
        with pytest.raises(UpstreamError) as stalled:
            await Plain(url + "/").complete(session, body={}, model="m", timeout_s=0.2)

    # Past the deadline, not when the upstream gave up (that would be a broken answer).
    assert stalled.value.kind == "timeout"


STREAM_BODY = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "stream": True}


def openai_at(url: str):
    from gateway.providers.openai import OpenAIProvider

    return OpenAIProvider(ProviderConfig(name="up", type="openai", options={"base_url": url + "/v1"}))


def _event(n: int, finish_reason: str | None = None) -> bytes:
    chunk = {"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "m",
             "choices": [{"index": 0, "delta": {"content": f"part {n}"}, "finish_reason": finish_reason}]}
    return b"data: " + json.dumps(chunk).encode() + b"\n\n"


async def test_a_stream_keeps_what_arrived_together_together() -> None:
    """The relay passes on in one write what one upstream read brought (``events()``), and a
    reader that wants the chunks one by one gets the same chunks."""

    async def two_then_one(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        await response.write(_event(1) + _event(2))
        await asyncio.sleep(0.1)
        await response.write(_event(3, "stop") + b"data: [DONE]\n\n")
        return response

    async with serving("/v1/chat/completions", two_then_one) as url, aiohttp.ClientSession() as session:
        provider = openai_at(url)
        stream = await provider.stream(session, body=STREAM_BODY, model="m", timeout_s=5)
        batched = [[chunk for chunk, _ in events] async for events in stream.events()]
        one_by_one = [chunk async for chunk in await provider.stream(session, body=STREAM_BODY, model="m", timeout_s=5)]

    texts = [[chunk["choices"][0]["delta"].get("content") for chunk in batch if chunk["choices"]] for batch in batched]
    assert texts[:2] == [["part 1", "part 2"], ["part 3"]]
    assert [chunk for batch in batched for chunk in batch] == one_by_one


async def test_aborting_a_stream_ends_the_read_in_progress_at_once() -> None:
    """A client that leaves hangs up on the upstream: the relay's wait for the next chunk ends
    in an UpstreamError, not when the model next speaks."""

    async def one_then_silence(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        await response.write(_event(1))
        await asyncio.sleep(30)
        return response

    async with serving("/v1/chat/completions", one_then_silence) as url, aiohttp.ClientSession() as session:
        stream = await openai_at(url).stream(session, body=STREAM_BODY, model="m", timeout_s=5)
        batches = stream.events()
        first = await anext(batches)
        waiting = asyncio.ensure_future(anext(batches))
        await asyncio.sleep(0.1)
        stream.abort()
        with pytest.raises(UpstreamError):
            await asyncio.wait_for(waiting, 2)

    assert first[0][0]["choices"][0]["delta"]["content"] == "part 1"


async def test_a_stream_that_started_in_time_outlives_its_first_byte_deadline() -> None:
    """The deadline is for the first byte: a stream whose rest takes longer is read to its end."""

    async def one_then_the_rest_later(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        await response.write(_event(1))
        await asyncio.sleep(0.3)
        await response.write(_event(2, "stop") + b"data: [DONE]\n\n")
        return response

    async with serving("/v1/chat/completions", one_then_the_rest_later) as url, aiohttp.ClientSession() as session:
        stream = await openai_at(url).stream(session, body=STREAM_BODY, model="m", timeout_s=0.1)
        chunks = [chunk async for chunk in stream]

    assert [chunk["choices"][0]["delta"].get("content") for chunk in chunks if chunk["choices"]] == ["part 1", "part 2"]
