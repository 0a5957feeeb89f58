"""A fast fake upstream speaking OpenAI Chat Completions, run in its own process.

``POST /v1/chat/completions`` answers at once: a JSON completion with usage, or (``"stream":
true``) an SSE stream of a role chunk, a few content chunks, the finish chunk, a usage chunk
and ``data: [DONE]``, each event written separately (its own chunk of a chunked response, sent
on its own) as a real server would.

``POST /hold/v1/chat/completions`` is the slow stream of the memory test: one content chunk a
second until ``POST /_bench/release``, then the finish, a usage chunk whose completion tokens
are the number of chunks sent (so a client can tell that none was lost) and ``[DONE]``. The mode
lives in the path, not in a header or a body field, so it survives any proxy in between: the
gateway's routing file points a second provider at that base URL.

``GET /_bench/stats`` reports the requests served and the peak of streams open at once, which
lets the memory test check on the upstream side that the streams really were concurrent;
``POST /_bench/reset`` starts the counts again.

It shares the helper CPU with the load generator and, for the gateway, with PostgreSQL and
Redis, so it does as little as an HTTP server can: an asyncio protocol parsing requests with
httptools and writing prebuilt headers (aiohttp.web took ~130 µs of that CPU per request, which
at half load left the gateway's database and Redis hops queueing behind the upstream; this takes
a third of it). The loop is asyncio's own, whose ``write`` sends at once: uvloop would gather a
stream's events into one send.

Run: ``python -m bench.fake_upstream --port 8101``.
"""

from __future__ import annotations

import argparse
import asyncio
import time

import httptools
import orjson

WORDS = ["The", " quick", " brown", " fox"]
PROMPT_TOKENS = 12
COMPLETION_TOKENS = len(WORDS)
TICK_SECONDS = 1.0

_JSON_HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n"
_STREAM_HEAD = (b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\n"
                b"Transfer-Encoding: chunked\r\n\r\n")
_LAST_CHUNK = b"0\r\n\r\n"
_CLOSE = b"HTTP/1.1 %d %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\nConnection: close\r\n\r\n"


class Stats:
    def __init__(self) -> None:
        self.requests = 0
        self.open_streams = 0
        self.peak_streams = 0

    def stream_opened(self) -> None:
        self.open_streams += 1
        self.peak_streams = max(self.peak_streams, self.open_streams)

    def stream_closed(self) -> None:
        self.open_streams -= 1

    def as_json(self) -> dict:
        return {"requests": self.requests, "open_streams": self.open_streams, "peak_streams": self.peak_streams}


def _usage(completion_tokens: int = COMPLETION_TOKENS) -> dict:
    return {
        "prompt_tokens": PROMPT_TOKENS,
        "completion_tokens": completion_tokens,
        "total_tokens": PROMPT_TOKENS + completion_tokens,
    }


def _completion(model: str) -> bytes:
    return orjson.dumps(
        {
            "id": "chatcmpl-bench",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": "".join(WORDS)},
                    "finish_reason": "stop",
                }
            ],
            "usage": _usage(),
        }
    )


def _event(payload: dict | str) -> bytes:
    """One SSE event as one chunk of a chunked response."""
    data = b"data: " + (payload.encode() if isinstance(payload, str) else orjson.dumps(payload)) + b"\n\n"
    return b"%x\r\n%s\r\n" % (len(data), data)


def _chunk(model: str, delta: dict, finish_reason: str | None = None) -> bytes:
    return _event(
        {
            "id": "chatcmpl-bench",
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}],
        }
    )


def _usage_chunk(model: str, completion_tokens: int = COMPLETION_TOKENS) -> bytes:
    return _event(
        {
            "id": "chatcmpl-bench",
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": model,
            "choices": [],
            "usage": _usage(completion_tokens),
        }
    )


def _ending(model: str, completion_tokens: int) -> list[bytes]:
    return [_chunk(model, {}, "stop"), _usage_chunk(model, completion_tokens), _event("[DONE]"), _LAST_CHUNK]


class HeldStream:
    def __init__(self, connection: Connection, model: str) -> None:
        self.connection = connection
        self.model = model
        self.ticks = 0


class Upstream:
    """What the connections share: the counts, and the held streams with their one ticker."""

    def __init__(self) -> None:
        self.stats = Stats()
        self.held: set[HeldStream] = set()
        self.released = False
        self._ticker: asyncio.Task | None = None

    def answer(self, connection: Connection, method: bytes, path: bytes, body: bytes) -> None:
        if method == b"POST" and path in (b"/v1/chat/completions", b"/hold/v1/chat/completions"):
            self.stats.requests += 1
            try:
                request = orjson.loads(body)
                model, stream = str(request.get("model", "bench")), bool(request.get("stream"))
            except (orjson.JSONDecodeError, AttributeError):
                connection.refuse(400, b"Bad Request", b'{"error": {"message": "not a JSON object"}}')
                return
            if path == b"/hold/v1/chat/completions":
                self._hold(connection, model)
            elif stream:
                self._stream(connection, model)
            else:
                completion = _completion(model)
                connection.write(_JSON_HEAD % len(completion) + completion)
        elif method == b"GET" and path == b"/_bench/stats":
            connection.write_json(self.stats.as_json())
        elif method == b"POST" and path == b"/_bench/reset":
            self.stats = Stats()
            self.stats.open_streams = len(self.held)
            self.released = False
            connection.write_json({"ok": True})
        elif method == b"POST" and path == b"/_bench/release":
            self._release()
            connection.write_json({"ok": True})
        else:
            connection.refuse(404, b"Not Found", b'{"error": {"message": "no such route"}}')

    def _stream(self, connection: Connection, model: str) -> None:
        self.stats.stream_opened()
        write = connection.write
        write(_STREAM_HEAD + _chunk(model, {"role": "assistant", "content": ""}))
        for word in WORDS:
            write(_chunk(model, {"content": word}))
        for part in _ending(model, COMPLETION_TOKENS):
            write(part)
        self.stats.stream_closed()

    def _hold(self, connection: Connection, model: str) -> None:
        self.stats.stream_opened()
        held = HeldStream(connection, model)
        connection.held = held
        self.held.add(held)
        connection.write(_STREAM_HEAD + _chunk(model, {"role": "assistant", "content": ""}))
        if self.released:
            self._finish(held)
        elif self._ticker is None or self._ticker.done():
            self._ticker = asyncio.get_running_loop().create_task(self._tick())

    async def _tick(self) -> None:
        while self.held and not self.released:
            await asyncio.sleep(TICK_SECONDS)
            for held in list(self.held):
                held.connection.write(_chunk(held.model, {"content": " tick"}))
                held.ticks += 1

    def _release(self) -> None:
        self.released = True
        for held in list(self.held):
            self._finish(held)

    def _finish(self, held: HeldStream) -> None:
        for part in _ending(held.model, held.ticks):
            held.connection.write(part)
        self.forget(held)

    def forget(self, held: HeldStream) -> None:
        if held in self.held:
            self.held.discard(held)
            held.connection.held = None
            self.stats.stream_closed()


class Connection(asyncio.Protocol):
    """One client connection: HTTP/1.1 requests parsed by httptools, answered in order."""

    def __init__(self, upstream: Upstream) -> None:
        self.upstream = upstream
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self.held: HeldStream | None = None
        self._url = b""
        self._body: list[bytes] = []

    def connection_made(self, transport) -> None:
        self.transport = transport

    def connection_lost(self, exc) -> None:
        # The load generator hangs up mid-stream when its run ends; that is not an upstream fault.
        if self.held is not None:
            self.upstream.forget(self.held)
        self.transport = None

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            self.refuse(400, b"Bad Request", b'{"error": {"message": "malformed HTTP"}}')

    def on_message_begin(self) -> None:
        self._url = b""
        self._body = []

    def on_url(self, url: bytes) -> None:
        self._url += url

    def on_body(self, body: bytes) -> None:
        self._body.append(body)

    def on_message_complete(self) -> None:
        path = httptools.parse_url(self._url).path
        self.upstream.answer(self, self.parser.get_method(), path, b"".join(self._body))
        if not self.parser.should_keep_alive() and self.held is None and self.transport is not None:
            self.transport.close()

    def write(self, data: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    def write_json(self, payload: dict) -> None:
        body = orjson.dumps(payload)
        self.write(_JSON_HEAD % len(body) + body)

    def refuse(self, status: int, reason: bytes, body: bytes) -> None:
        self.write(_CLOSE % (status, reason, len(body)) + body)
        if self.transport is not None:
            self.transport.close()


async def serve(host: str, port: int) -> None:
    upstream = Upstream()
    server = await asyncio.get_running_loop().create_server(lambda: Connection(upstream), host, port, backlog=4096)
    async with server:
        await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    asyncio.run(serve(args.host, args.port))


if __name__ == "__main__":
    main()
