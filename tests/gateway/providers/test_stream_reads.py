"""Reading an upstream's stream: what has arrived is taken at once, and the relay is told before
a read that has to wait (it watches for a client that leaves only then)."""

import asyncio
import gc
import weakref
from types import SimpleNamespace

import aiohttp
from aiohttp.base_protocol import BaseProtocol

from gateway.dialects.chat_completions import ChatCompletions
from gateway.providers.base import UpstreamChunkStream
from gateway.providers.openai import OpenAIStreamDecoder
from gateway.relay import StreamRelay
from gateway.summary import CallSummary

EVENTS = [
    b'data: {"id":"c1","choices":[{"index":0,"delta":{"role":"assistant","content":""},"finish_reason":null}]}\n\n',
    b'data: {"id":"c1","choices":[{"index":0,"delta":{"content":"Hi"},"finish_reason":null}]}\n\n',
    b'data: {"id":"c1","choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}\n\n',
    b"data: [DONE]\n\n",
]


class Response:
    """What the stream uses of an aiohttp response: its body reader, and hanging up."""

    def __init__(self, content: aiohttp.StreamReader) -> None:
        self.content = content
        self.closed = False

    def close(self) -> None:
        self.closed = True


async def read_all(stream: UpstreamChunkStream) -> list[list[dict]]:
    return [[chunk for chunk, _ in events] async for events in stream.events()]


def open_stream(first: bytes) -> tuple[aiohttp.StreamReader, UpstreamChunkStream, list[str]]:
    """A response body reader that the test feeds as the upstream's connection would."""
    loop = asyncio.get_running_loop()
    protocol = BaseProtocol(loop)
    protocol.connection_made(asyncio.Transport())
    content = aiohttp.StreamReader(protocol, 2**16, loop=loop)
    decoder = OpenAIStreamDecoder()
    stream = UpstreamChunkStream(Response(content), decoder, decoder.feed_events(first))
    waits: list[str] = []
    stream.on_wait = lambda: waits.append("wait")
    return content, stream, waits


def contents(batches: list[list[dict]]) -> list:
    return [chunk["choices"][0]["delta"].get("content") for batch in batches for chunk in batch]


def test_an_answer_that_is_in_already_is_read_without_waiting():
    async def scenario():
        content, stream, waits = open_stream(EVENTS[0])
        for event in EVENTS[1:]:
            content.feed_data(event)
        content.feed_eof()
        return await read_all(stream), waits, stream.complete

    batches, waits, complete = asyncio.run(scenario())

    assert waits == []
    assert contents(batches) == ["", "Hi", None]
    assert len(batches) == 2  # the first read's, then everything that was in, together
    assert complete


def test_the_relay_is_told_before_each_read_that_waits():
    async def scenario():
        content, stream, waits = open_stream(EVENTS[0])

        async def upstream() -> None:
            for event in EVENTS[1:]:
                await asyncio.sleep(0.02)
                content.feed_data(event)
            content.feed_eof()

        feeding = asyncio.ensure_future(upstream())
        batches = await read_all(stream)
        await feeding
        return batches, waits, stream.complete

    batches, waits, complete = asyncio.run(scenario())

    assert contents(batches) == ["", "Hi", None]
    assert waits == ["wait"] * 3  # before each of the three reads that found nothing in yet
    assert complete


def test_a_stream_that_broke_while_in_is_an_upstream_error():
    async def scenario():
        content, stream, _ = open_stream(EVENTS[0])
        content.set_exception(aiohttp.ClientPayloadError("connection reset"))
        try:
            await read_all(stream)
        except Exception as error:  # noqa: BLE001 - the test looks at what it is
            return error
        return None

    error = asyncio.run(scenario())

    assert type(error).__name__ == "UpstreamError" and "stream broke" in str(error)


def test_a_relayed_stream_is_freed_as_it_ends_without_the_cyclic_collector():
    # The relay, its chunks and its watch of the client (a task, cancelled) must not refer to
    # each other once the stream is done: else every stream is left to the cyclic collector.
    async def scenario():
        content, stream, _ = open_stream(EVENTS[0])
        sent, watched = [], []

        async def send(message) -> None:
            sent.append(message)

        async def receive():  # a client that stays
            watched.append(True)
            await asyncio.Event().wait()

        relay = StreamRelay(ChatCompletions(), SimpleNamespace(include_usage=False), stream, CallSummary(),
                            receive, send, headers={})

        async def upstream() -> None:
            for event in EVENTS[1:]:
                await asyncio.sleep(0.01)  # the relay waits for each: it watches the client
                content.feed_data(event)
            content.feed_eof()

        feeding = asyncio.ensure_future(upstream())
        assert await relay.relay() is None
        await relay.finish(None)
        await feeding
        await asyncio.sleep(0)  # the watch's cancellation runs
        return weakref.ref(relay), sent, watched

    gc.disable()
    try:
        relay, sent, watched = asyncio.run(scenario())
        assert relay() is None
    finally:
        gc.enable()
    assert watched == [True]
    assert sent[-1]["body"].endswith(b"data: [DONE]\n\n")
