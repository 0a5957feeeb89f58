"""A fast fake upstream speaking OpenAI Chat Completions, run in its own process.

``POST /v1/chat/completions`` answers at once: a JSON completion with usage, or (``"stream":
true``) an SSE stream of a role chunk, a few content chunks, the finish chunk, a usage chunk
and ``data: [DONE]``, each event written separately as a real server would.

``POST /hold/v1/chat/completions`` is the slow stream of the memory test: one content chunk a
second until ``POST /_bench/release``, then the finish, a usage chunk whose completion tokens
are the number of chunks sent (so a client can tell that none was lost) and ``[DONE]``. The mode
lives in the path, not in a header or a body field, so it survives any proxy in between: the
gateway's routing file points a second provider at that base URL.

``GET /_bench/stats`` reports the requests served and the peak of streams open at once, which
lets the memory test check on the upstream side that the streams really were concurrent;
``POST /_bench/reset`` starts the counts again.

Run: ``python -m bench.fake_upstream --port 8101``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time

from aiohttp import web

WORDS = ["The", " quick", " brown", " fox"]
PROMPT_TOKENS = 12
COMPLETION_TOKENS = len(WORDS)
TICK_SECONDS = 1.0


class Stats:
    def __init__(self) -> None:
        self.released = asyncio.Event()
        self.requests = 0
        self.open_streams = 0
        self.peak_streams = 0

    def stream_opened(self) -> None:
        self.open_streams += 1
        self.peak_streams = max(self.peak_streams, self.open_streams)

    def stream_closed(self) -> None:
        self.open_streams -= 1


def _usage(completion_tokens: int = COMPLETION_TOKENS) -> dict:
    return {
        "prompt_tokens": PROMPT_TOKENS,
        "completion_tokens": completion_tokens,
        "total_tokens": PROMPT_TOKENS + completion_tokens,
    }


def _completion(model: str) -> bytes:
    return json.dumps(
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
    ).encode()


def _event(payload: dict | str) -> bytes:
    data = payload if isinstance(payload, str) else json.dumps(payload)
    return f"data: {data}\n\n".encode()


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


async def _read_request(request: web.Request) -> tuple[str, bool]:
    body = json.loads(await request.read())
    return str(body.get("model", "bench")), bool(body.get("stream"))


async def _stream(request: web.Request, model: str, *, held: bool) -> web.StreamResponse:
    stats: Stats = request.app["stats"]
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
    stats.stream_opened()
    try:
        await response.prepare(request)
        await response.write(_chunk(model, {"role": "assistant", "content": ""}))
        if held:
            ticks = await _tick_until_released(response, model, stats.released)
        else:
            for word in WORDS:
                await response.write(_chunk(model, {"content": word}))
            ticks = COMPLETION_TOKENS
        await response.write(_chunk(model, {}, "stop"))
        await response.write(_usage_chunk(model, ticks))
        await response.write(_event("[DONE]"))
        await response.write_eof()
    except ConnectionResetError:
        # The load generator hangs up mid-stream when its run ends; that is not an upstream fault.
        pass
    finally:
        stats.stream_closed()
    return response


async def _tick_until_released(response: web.StreamResponse, model: str, released: asyncio.Event) -> int:
    ticks = 0
    while not released.is_set():
        try:
            await asyncio.wait_for(released.wait(), timeout=TICK_SECONDS)
        except TimeoutError:
            await response.write(_chunk(model, {"content": " tick"}))
            ticks += 1
    return ticks


async def chat_completions(request: web.Request) -> web.StreamResponse:
    request.app["stats"].requests += 1
    model, stream = await _read_request(request)
    if stream:
        return await _stream(request, model, held=False)
    return web.Response(body=_completion(model), content_type="application/json")


async def held_chat_completions(request: web.Request) -> web.StreamResponse:
    request.app["stats"].requests += 1
    model, _ = await _read_request(request)
    return await _stream(request, model, held=True)


async def stats(request: web.Request) -> web.Response:
    current: Stats = request.app["stats"]
    return web.json_response(
        {"requests": current.requests, "open_streams": current.open_streams, "peak_streams": current.peak_streams}
    )


async def reset_stats(request: web.Request) -> web.Response:
    request.app["stats"] = Stats()
    return web.json_response({"ok": True})


async def release_streams(request: web.Request) -> web.Response:
    request.app["stats"].released.set()
    return web.json_response({"ok": True})


def make_app() -> web.Application:
    app = web.Application()
    app["stats"] = Stats()
    app.router.add_post("/v1/chat/completions", chat_completions)
    app.router.add_post("/hold/v1/chat/completions", held_chat_completions)
    app.router.add_get("/_bench/stats", stats)
    app.router.add_post("/_bench/reset", reset_stats)
    app.router.add_post("/_bench/release", release_streams)
    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    # access_log=None: a log line per request would cost more than the answer itself.
    web.run_app(make_app(), host=args.host, port=args.port, access_log=None, print=None, backlog=4096)


if __name__ == "__main__":
    main()
