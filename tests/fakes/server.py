"""The machinery every fake upstream shares: an aiohttp server on 127.0.0.1 and a random port,
a script of behaviours, and a record of every request it received.

Async tests: ``async with FakeX() as fake:`` serves on the test's own loop.
Sync tests: ``with FakeX() as fake:`` serves from a thread with its own loop.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import math
import socket
import struct
import threading
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Self
from urllib.parse import parse_qsl

from aiohttp import web
from multidict import CIMultiDict

from gateway.providers.mock import example_arguments
from tests.fakes.behaviours import (
    Behaviour,
    DieBeforeFirstByte,
    DieMidway,
    Hang,
    Raw,
    Reply,
    Reset,
    Status,
    StreamError,
)

FAULT_DELAY_S = 0.05


@dataclass(frozen=True)
class ReceivedRequest:
    method: str
    path: str
    query: dict[str, str]
    headers: CIMultiDict[str]
    body: bytes

    @property
    def json(self) -> Any:
        return json.loads(self.body) if self.body else None

    @property
    def form(self) -> dict[str, str]:
        return dict(parse_qsl(self.body.decode()))


@dataclass(frozen=True)
class Conversation:
    """What a fake needs to know of a request to answer it, whatever the wire format."""

    tools: list[tuple[str, dict]] = field(default_factory=list)
    tool_results: list[str] = field(default_factory=list)
    last_text: str = ""


@dataclass(frozen=True)
class Plan:
    """The answer to give, before it is put in a wire format."""

    text: str
    tool_calls: list[tuple[str, dict]]


def plan_reply(reply: Reply, conversation: Conversation) -> Plan:
    if reply.text is not None or reply.tool_calls is not None:
        return Plan(text=reply.text or "", tool_calls=list(reply.tool_calls or ()))
    if conversation.tool_results:
        return Plan(text="Tool results: " + "; ".join(conversation.tool_results), tool_calls=[])
    if conversation.tools:
        called = conversation.tools if reply.parallel else conversation.tools[:1]
        return Plan(text="", tool_calls=[(name, example_arguments(schema)) for name, schema in called])
    return Plan(text=f"Fake answer to: {conversation.last_text}", tool_calls=[])


def split_text(text: str, pieces: int = 3) -> list[str]:
    """Streamed text arrives in pieces; keep at least one (possibly empty) piece."""
    size = max(1, -(-len(text) // pieces))
    return [text[start : start + size] for start in range(0, len(text), size)] or [""]


def fake_vector(text: str, dimensions: int) -> list[float]:
    """A unit vector standing for ``text``'s embedding, the same for the same text."""
    seed = hashlib.sha256(text.encode()).digest()
    values = [(seed[i % len(seed)] - 127.5) * (1 + i % 7) for i in range(dimensions)]
    norm = math.sqrt(sum(value * value for value in values))
    return [value / norm for value in values]


class FakeUpstream:
    """Subclasses give the routes and the wire format; this class plays the behaviours."""

    paths: tuple[str, ...] = ()
    stream_content_type = "text/event-stream"

    def __init__(self) -> None:
        self.requests: list[ReceivedRequest] = []
        self.root_url = ""
        self._script: deque[Behaviour] = deque()
        self._runner: web.AppRunner | None = None
        self._stopping: asyncio.Event | None = None
        self._thread: threading.Thread | None = None
        self._thread_loop: asyncio.AbstractEventLoop | None = None
        # Set to an unset Event, streamed answers send their first event and wait for it to be
        # set before the rest: streams held open for as long as a test needs.
        self.hold_streams: threading.Event | None = None

    # --- what a test uses ------------------------------------------------------------------
    def script(self, *behaviours: Behaviour) -> None:
        """Queue behaviours for the next requests, in order; then it answers normally."""
        self._script.extend(behaviours)

    @property
    def count(self) -> int:
        return len(self.requests)

    @property
    def base_url(self) -> str:
        """What goes into the provider's ``base_url`` option."""
        return self.root_url

    async def start(self) -> str:
        self._stopping = asyncio.Event()
        app = web.Application()
        app.add_routes([web.post(path, self._handle) for path in self.paths])
        # A short shutdown keeps hanging handlers from holding a test for a minute.
        self._runner = web.AppRunner(app, shutdown_timeout=0.2, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        host, port = self._runner.addresses[0][:2]
        self.root_url = f"http://{host}:{port}"
        return self.base_url

    async def stop(self) -> None:
        assert self._stopping is not None and self._runner is not None
        self._stopping.set()
        await self._runner.cleanup()

    def start_in_thread(self) -> str:
        loop = asyncio.new_event_loop()
        self._thread_loop = loop
        self._thread = threading.Thread(target=loop.run_forever, name=type(self).__name__, daemon=True)
        self._thread.start()
        return asyncio.run_coroutine_threadsafe(self.start(), loop).result(timeout=10)

    def stop_in_thread(self) -> None:
        assert self._thread is not None and self._thread_loop is not None
        asyncio.run_coroutine_threadsafe(self.stop(), self._thread_loop).result(timeout=10)
        self._thread_loop.call_soon_threadsafe(self._thread_loop.stop)
        self._thread.join(timeout=10)
        self._thread_loop.close()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    def __enter__(self) -> Self:
        self.start_in_thread()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop_in_thread()

    # --- what a wire format defines ----------------------------------------------------------
    def is_stream(self, request: ReceivedRequest) -> bool:
        raise NotImplementedError

    def answer(self, request: ReceivedRequest, reply: Reply, *, stream: bool) -> Any:
        """The JSON body of a plain answer, or the framed events of a streamed one."""
        raise NotImplementedError

    def error_body(self, status: int, message: str, *, stream: bool) -> Any:
        raise NotImplementedError

    def error_event(self, status: int, message: str) -> bytes:
        raise NotImplementedError

    def refusal(self, request: ReceivedRequest) -> Status | None:
        """A request the real upstream would refuse; ``None`` when it is acceptable."""
        return None

    # --- playing a behaviour -------------------------------------------------------------------
    async def _handle(self, request: web.Request) -> web.StreamResponse:
        received = ReceivedRequest(
            method=request.method,
            path=request.path,
            query=dict(request.query),
            headers=CIMultiDict(request.headers),
            body=await request.read(),
        )
        self.requests.append(received)
        behaviour = self._script.popleft() if self._script else Reply()
        behaviour = self.refusal(received) or behaviour
        stream = self.is_stream(received)

        if isinstance(behaviour, Hang):
            assert self._stopping is not None
            await self._stopping.wait()
            return web.Response(status=503)
        if isinstance(behaviour, Status):
            headers = {"Retry-After": behaviour.retry_after} if behaviour.retry_after else None
            body = self.error_body(behaviour.status, behaviour.message, stream=stream)
            return web.json_response(body, status=behaviour.status, headers=headers)
        if isinstance(behaviour, Raw):
            body = behaviour.body.encode() if isinstance(behaviour.body, str) else behaviour.body
            return web.Response(body=body, status=behaviour.status, headers={"Content-Type": behaviour.content_type})
        if isinstance(behaviour, Reset):
            _reset(request)
            return web.Response()

        if isinstance(behaviour, Reply) and behaviour.delay_s:
            await asyncio.sleep(behaviour.delay_s)
        answer = self.answer(received, behaviour if isinstance(behaviour, Reply) else Reply(), stream=stream)
        if stream:
            return await self._stream(request, behaviour, answer)
        return await self._plain(request, behaviour, json.dumps(answer).encode())

    async def _plain(self, request: web.Request, behaviour: Behaviour, body: bytes) -> web.StreamResponse:
        if not isinstance(behaviour, DieBeforeFirstByte | DieMidway):
            return web.Response(body=body, headers={"Content-Type": "application/json"})
        response = web.StreamResponse(headers={"Content-Type": "application/json", "Content-Length": str(len(body))})
        await response.prepare(request)
        if isinstance(behaviour, DieMidway):
            await response.write(body[: len(body) // 2])
        _drop(request)
        return response

    async def _stream(self, request: web.Request, behaviour: Behaviour, events: list[bytes]) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": self.stream_content_type})
        await response.prepare(request)
        if isinstance(behaviour, DieBeforeFirstByte):
            _drop(request)
            return response
        if isinstance(behaviour, DieMidway | StreamError):
            # Keep the last event back, so the answer is never complete.
            for event in events[: min(behaviour.events, len(events) - 1)]:
                await response.write(event)
            # Let what was sent reach the client first: the fault then comes after the first
            # chunks, as from a real upstream, instead of in the same read.
            await asyncio.sleep(FAULT_DELAY_S)
            if isinstance(behaviour, DieMidway):
                _drop(request)
                return response
            await response.write(self.error_event(behaviour.status, "fake error inside the stream"))
        else:
            for n, event in enumerate(events):
                await response.write(event)
                while n == 0 and self.hold_streams is not None and not self.hold_streams.is_set():
                    await asyncio.sleep(0.02)
        await response.write_eof()
        return response


def _drop(request: web.Request) -> None:
    """Close the connection after what was written so far: the body is never completed."""
    assert request.transport is not None
    request.transport.close()


def _reset(request: web.Request) -> None:
    """Close with SO_LINGER 0, so the peer gets a TCP RST instead of an orderly close."""
    assert request.transport is not None
    sock = request.transport.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    request.transport.abort()
