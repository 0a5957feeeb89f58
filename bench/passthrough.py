"""The reference: the least a Python proxy can do, served by the same stack as the gateway.

A plain ASGI app and one shared aiohttp session per worker. ``POST /v1/chat/completions`` (and
the fake's ``/hold/v1/chat/completions``) forwards the body bytes untouched to the
upstream at ``BENCH_UPSTREAM_URL`` and relays the answer: the whole body for JSON, every read as
it arrives for an event stream. No parsing, no auth, no accounting: whatever the gateway does on
top of this is its cost.

Serve: ``BENCH_UPSTREAM_URL=http://127.0.0.1:8101 gunicorn bench.passthrough:app
-k uvicorn_worker.UvicornWorker -w 1``.
"""

from __future__ import annotations

import os

import aiohttp

UPSTREAM_URL = os.environ.get("BENCH_UPSTREAM_URL", "http://127.0.0.1:8101").rstrip("/")

_session: aiohttp.ClientSession | None = None


def _shared_session() -> aiohttp.ClientSession:
    global _session
    if _session is None:
        # limit=0: the default pool of 100 connections would queue the 2,000 streams of the
        # memory test behind each other.
        _session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))
    return _session


async def _read_body(receive) -> bytes:
    body = b""
    more = True
    while more:
        message = await receive()
        body += message.get("body", b"")
        more = message.get("more_body", False)
    return body


async def _send_simple(send, status: int, body: bytes) -> None:
    await send({"type": "http.response.start", "status": status, "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": body})


async def _lifespan(receive, send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            _shared_session()
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            if _session is not None:
                await _session.close()
            await send({"type": "lifespan.shutdown.complete"})
            return


async def app(scope, receive, send) -> None:
    if scope["type"] == "lifespan":
        await _lifespan(receive, send)
        return
    path = scope["path"]
    if scope["method"] != "POST" or not path.endswith("/v1/chat/completions"):
        await _send_simple(send, 404, b'{"error": {"message": "not found"}}')
        return
    body = await _read_body(receive)
    headers = {"Content-Type": "application/json", "Authorization": "Bearer bench-upstream-key"}
    async with _shared_session().post(UPSTREAM_URL + path, data=body, headers=headers) as upstream:
        content_type = upstream.headers.get("Content-Type", "application/json").encode()
        await send(
            {"type": "http.response.start", "status": upstream.status, "headers": [(b"content-type", content_type)]}
        )
        if not content_type.startswith(b"text/event-stream"):
            await send({"type": "http.response.body", "body": await upstream.read()})
            return
        async for data in upstream.content.iter_any():
            await send({"type": "http.response.body", "body": data, "more_body": True})
        await send({"type": "http.response.body", "body": b""})
