"""The contract every upstream wire format implements.

A provider turns an OpenAI Chat Completions request into its own wire format and its answers
back into OpenAI's shape. HTTP providers only describe the request (``prepare``) and decode the
answer (``parse_response`` / ``stream_decoder``); the shared aiohttp plumbing in this module sends
it, applies the deployment's timeout and classifies failures, so every provider fails alike.
"""

from __future__ import annotations

import asyncio
import email.utils
import functools
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import aiohttp
import orjson

ErrorKind = Literal["timeout", "connect", "server", "rate_limit", "client"]
# An embeddings call whose inputs take several requests (one a request, on some upstreams) sends
# this many at once: a list of thousands must not take every connection of the worker.
MAX_PARALLEL_POSTS = 8


@dataclass(frozen=True, slots=True)
class ProviderConfig:
    name: str
    type: str
    options: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)  # not frozen: see counters.Bucket
class UpstreamRequest:
    url: str
    headers: dict[str, str]
    body: bytes


class UpstreamError(Exception):
    """An upstream failure, classified so the router knows whether to move down the chain."""

    def __init__(
        self,
        kind: ErrorKind,
        message: str,
        *,
        status: int | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message
        self.status = status
        self.retry_after = retry_after

    @property
    def retryable(self) -> bool:
        return self.kind != "client"

    @property
    def outcome(self) -> str:
        """The short word that goes into ``x-nemo-attempts``."""
        if self.kind in ("timeout", "connect", "rate_limit", "client"):
            return {"timeout": "timeout", "connect": "connect_error", "rate_limit": "429",
                    "client": str(self.status or 400)}[self.kind]
        return str(self.status or 500)


def parse_retry_after(value: str | None) -> float | None:
    """Retry-After is either delay-seconds or an HTTP date."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def classify_status(status: int, headers: Any, message: str) -> UpstreamError:
    retry_after = parse_retry_after(headers.get("Retry-After") if headers else None)
    if status == 429:
        return UpstreamError("rate_limit", message, status=status, retry_after=retry_after)
    if status == 408:
        return UpstreamError("timeout", message, status=status)
    # An upstream's 401/403/404 says this deployment's credentials or model id are wrong, not the
    # caller's request: the next link may serve it, and the caller must not read it as its own.
    if status >= 500 or status in (401, 403, 404):
        return UpstreamError("server", message, status=status, retry_after=retry_after)
    return UpstreamError("client", message, status=status)


# A chunk of the answer as the relay takes it: the chunk, and its SSE event as the upstream
# framed it when the chunk is the upstream's own, unchanged (the relay sends those bytes on
# instead of encoding the chunk again), else None.
Event = tuple[dict, bytes | None]


class StreamDecoder:
    """Turns the upstream's stream bytes into OpenAI ``chat.completion.chunk`` dicts.

    ``feed`` may be called with any slice of the byte stream (events split across reads);
    ``finish`` is called once the upstream closed. The decoder always emits a final usage chunk
    (``choices: []``); the gateway drops it when the client did not ask for usage.
    Errors sent inside the stream raise :class:`UpstreamError`. ``feed_events`` and
    ``finish_events`` are the same with each chunk's event (``Event``): a decoder that passes
    the upstream's chunks through gives their bytes; a translating one gives None.
    """

    def feed(self, data: bytes) -> list[dict]:
        raise NotImplementedError

    def finish(self) -> list[dict]:
        raise NotImplementedError

    def feed_events(self, data: bytes) -> list[Event]:
        return [(chunk, None) for chunk in self.feed(data)]

    def finish_events(self) -> list[Event]:
        return [(chunk, None) for chunk in self.finish()]

    @property
    def complete(self) -> bool:
        """The upstream has said its last word: nothing after it would reach the client."""
        return False


class ChunkStream:
    """The rest of a streamed call: its chunks one by one (``async for``), or as they came, one
    upstream read's worth at a time, each chunk with its ``Event`` (``events()``), so that a relay
    can pass on together what arrived together. Either way the chunks are the same.
    ``complete`` tells, after a batch, that it held the answer's end (its decoder's
    ``complete``)."""

    # Whether ``on_wait`` is called before every read that has to wait for the upstream (a relay
    # then watches for a client that leaves only while there is something to wait for).
    signals_waits = False

    def __init__(self, events: AsyncGenerator[list[Event], None], abort: Callable[[], object] | None = None,
                 decoder: StreamDecoder | None = None) -> None:
        self._events = events
        self._abort = abort
        self._decoder = decoder
        self.on_wait: Callable[[], object] = _nothing

    @property
    def complete(self) -> bool:
        return self._decoder is not None and self._decoder.complete

    def abort(self) -> None:
        """Hangs up on the upstream (the client left): a read in progress ends at once, in an
        UpstreamError. A stream with nothing to hang up on runs to its end."""
        if self._abort is not None:
            self._abort()

    def events(self) -> AsyncGenerator[list[Event], None]:
        return self._events

    async def __aiter__(self) -> AsyncIterator[dict]:
        async for events in self._events:
            for chunk, _ in events:
                yield chunk

    async def aclose(self) -> None:
        await self._events.aclose()


@functools.cache
def _whole_timeout(timeout_s: float) -> aiohttp.ClientTimeout:
    """One ``ClientTimeout`` per deployment's timeout, not one per call (a frozen dataclass: ~3 µs
    to build)."""
    return aiohttp.ClientTimeout(total=timeout_s)


class Provider:
    """Base of every provider. ``model`` is the provider's own model id of the deployment."""

    def __init__(self, config: ProviderConfig) -> None:
        self.config = config

    # --- what an HTTP provider describes -------------------------------------------------
    def credentials_ready(self) -> bool:
        """False when ``prepare`` may first have to fetch credentials (a token to refresh)."""
        return True

    async def prepare(self, *, body: dict, model: str, stream: bool, output_cap: int | None = None) -> UpstreamRequest:
        """``output_cap``: the output limit the gateway reserved for a call whose client named
        none; it goes upstream in the wire format's own field, so no answer can cost more than
        was reserved for it."""
        raise NotImplementedError

    def parse_response(self, *, body: bytes, model: str) -> dict:
        raise NotImplementedError

    def stream_decoder(self, *, model: str, body: dict) -> StreamDecoder:
        """``body``: the client's request, for a decoder whose output depends on what it asked."""
        raise NotImplementedError

    def classify_error(self, *, status: int, headers: Any, body: bytes) -> UpstreamError:
        return classify_status(status, headers, body[:500].decode("utf-8", "replace"))

    # --- the shared plumbing ---------------------------------------------------------------
    async def complete(
        self, session: aiohttp.ClientSession, *, body: dict, model: str, timeout_s: float,
        output_cap: int | None = None,
    ) -> dict:
        """One non-streamed call; the timeout covers the whole call, getting credentials included."""
        raw = await self._exchange(session, self.prepare(body=body, model=model, stream=False, output_cap=output_cap),
                                   timeout_s)
        return self.parse_response(body=raw, model=model)

    async def _exchange(self, session: aiohttp.ClientSession, preparing, timeout_s: float) -> bytes:
        """The answer's bytes to the request ``preparing`` (a ``prepare`` coroutine) makes.

        The HTTP exchange runs on aiohttp's own timer (which the session arms for every request
        anyway), so the usual call, with nothing to fetch first, starts no second one."""
        started = time.monotonic()
        try:
            if self.credentials_ready():
                # Nothing to fetch first: preparing takes microseconds, the exchange the whole timeout.
                request = await preparing
                timeout = _whole_timeout(timeout_s)
            else:
                async with asyncio.timeout(timeout_s):
                    request = await preparing
                remaining = timeout_s - (time.monotonic() - started)
                if remaining <= 0:
                    raise TimeoutError
                timeout = aiohttp.ClientTimeout(total=remaining)
            async with session.post(request.url, data=request.body, headers=request.headers,
                                    timeout=timeout) as resp:
                raw = await resp.read()
                if resp.status >= 400:
                    raise self.classify_error(status=resp.status, headers=resp.headers, body=raw)
        except TimeoutError as exc:
            raise UpstreamError("timeout", f"no answer within {timeout_s}s") from exc
        except aiohttp.ClientError as exc:
            raise UpstreamError("connect", f"connection failed: {exc}") from exc
        finally:
            preparing.close()
        return raw

    async def stream(
        self, session: aiohttp.ClientSession, *, body: dict, model: str, timeout_s: float,
        output_cap: int | None = None,
    ) -> ChunkStream:
        """A streamed call; the timeout covers the time to the first byte.

        The first chunk is awaited before this returns, so a failure before anything could be
        sent to the client raises here and the router may still fall back.
        """
        decoder = self.stream_decoder(model=model, body=body)
        return await self._open_stream(session, self.prepare(body=body, model=model, stream=True,
                                                             output_cap=output_cap), decoder, timeout_s)

    async def _open_stream(self, session: aiohttp.ClientSession, preparing, decoder: StreamDecoder,
                           timeout_s: float) -> ChunkStream:
        resp: aiohttp.ClientResponse | None = None
        deadline = Deadline(timeout_s)
        try:
            try:
                request = await preparing
                resp = await session.post(request.url, data=request.body, headers=request.headers)
                if resp.status >= 400:
                    raw = await resp.read()
                    resp.release()
                    raise self.classify_error(status=resp.status, headers=resp.headers, body=raw)
                first: list[Event] = []
                while not first:
                    data = await resp.content.readany()
                    if not data:
                        first = decoder.finish_events()
                        break
                    first = decoder.feed_events(data)
                if not first:
                    raise UpstreamError("server", "stream closed before any event")
            finally:
                timed_out = deadline.disarm()
                preparing.close()
        except (asyncio.CancelledError, TimeoutError) as exc:
            if resp is not None:
                resp.close()
            # A TimeoutError is aiohttp's own (its connect timeouts); a cancellation only the
            # deadline's.
            if isinstance(exc, asyncio.CancelledError) and not timed_out:
                raise
            raise UpstreamError("timeout", f"no first byte within {timeout_s}s") from exc
        except aiohttp.ClientError as exc:
            if resp is not None:
                resp.close()
            raise UpstreamError("connect", f"connection failed: {exc}") from exc
        except UpstreamError:
            if resp is not None:
                resp.close()
            raise
        return UpstreamChunkStream(resp, decoder, first)

    # --- a client's own wire format ---------------------------------------------------------------
    # A provider whose upstream speaks a client API's wire format (``native_wire``: Claude on
    # Vertex speaks Anthropic's) takes that API's calls as they came (``NativeCall``: the body,
    # the headers to pass on) and answers them with the upstream's own bytes: ``answer`` for a
    # whole one, and a stream whose events carry the upstream's bytes (``native_stream_decoder``).
    native_wire: str | None = None

    async def prepare_native(self, *, native, model: str, stream: bool) -> UpstreamRequest:
        raise NotImplementedError

    def native_stream_decoder(self, *, model: str, native) -> StreamDecoder:
        """``native``: the call, whose ``answer`` the decoder may set to the whole answer the
        stream was, once it is (for the response cache)."""
        raise NotImplementedError

    async def complete_native(self, session: aiohttp.ClientSession, *, native, model: str, timeout_s: float) -> dict:
        """The call sent as it came; the upstream's bytes kept in ``native.answer``, and the
        answer as a chat completion (for the log, the bill and the cache) returned."""
        raw = await self._exchange(session, self.prepare_native(native=native, model=model, stream=False), timeout_s)
        answer = self.parse_response(body=raw, model=model)
        native.answer = raw
        return answer

    async def stream_native(self, session: aiohttp.ClientSession, *, native, model: str,
                            timeout_s: float) -> ChunkStream:
        chunks = await self._open_stream(session, self.prepare_native(native=native, model=model, stream=True),
                                         self.native_stream_decoder(model=model, native=native), timeout_s)
        native.streamed = True
        return chunks

    async def count_tokens(self, session: aiohttp.ClientSession, *, body: dict, native, model: str,
                           timeout_s: float) -> dict:
        """``{"input_tokens": N}`` for a request's prompt: an estimate from its Chat body, where
        the upstream counts none."""
        return estimated_count(body)

    # --- embeddings ----------------------------------------------------------------------------
    async def prepare_embedding(self, *, body: dict, model: str) -> list[UpstreamRequest]:
        """The requests that embed ``body["input"]``: one, or several where the upstream takes
        fewer inputs a request. ``body`` is an OpenAI embeddings request; its answer is always
        asked for in floats."""
        raise UpstreamError("server", f"provider {self.config.name} ({self.config.type}) cannot embed", status=501)

    def parse_embedding(self, *, bodies: list[bytes], body: dict, model: str) -> dict:
        """The answers to ``prepare_embedding``'s requests, in their order, as one OpenAI
        embeddings response (``object: "list"``, float vectors, ``usage``)."""
        raise NotImplementedError

    async def embed(self, session: aiohttp.ClientSession, *, body: dict, model: str, timeout_s: float) -> dict:
        """One embeddings call; the timeout covers all of it (credentials, and every request
        when the inputs take several, sent together)."""
        try:
            async with asyncio.timeout(timeout_s):
                requests = await self.prepare_embedding(body=body, model=model)
                if len(requests) == 1:
                    bodies = [await self._post(session, requests[0])]
                else:
                    bodies = await self._post_all(session, requests)
        except TimeoutError as exc:
            raise UpstreamError("timeout", f"no answer within {timeout_s}s") from exc
        except aiohttp.ClientError as exc:
            raise UpstreamError("connect", f"connection failed: {exc}") from exc
        return self.parse_embedding(bodies=bodies, body=body, model=model)

    async def _post(self, session: aiohttp.ClientSession, request: UpstreamRequest) -> bytes:
        async with session.post(request.url, data=request.body, headers=request.headers) as resp:
            raw = await resp.read()
            if resp.status >= 400:
                raise self.classify_error(status=resp.status, headers=resp.headers, body=raw)
            return raw

    async def _post_all(self, session: aiohttp.ClientSession, requests: list[UpstreamRequest]) -> list[bytes]:
        """All of them, a few at a time, or the first failure (the others are then cancelled)."""
        sending = asyncio.Semaphore(MAX_PARALLEL_POSTS)

        async def post(request: UpstreamRequest) -> bytes:
            async with sending:
                return await self._post(session, request)

        try:
            async with asyncio.TaskGroup() as group:
                tasks = [group.create_task(post(request)) for request in requests]
        except BaseExceptionGroup as failed:
            raise failed.exceptions[0] from None
        return [task.result() for task in tasks]


class Deadline:
    """``asyncio.timeout`` for one block without its async context manager (a stream's first
    byte: ~9 k instructions fewer a stream, ~0.5% of it). At the deadline the
    task is cancelled; ``disarm``, called once as the block ends however it ends, tells whether
    that cancellation was the deadline's own (as ``asyncio.timeout`` does, by the task's count of
    cancellations: a cancellation from outside, say a client that left, stays one)."""

    __slots__ = ("_task", "_cancelling", "_handle", "_fired")

    def __init__(self, delay: float) -> None:
        self._task = asyncio.current_task()
        self._cancelling = self._task.cancelling()
        self._fired = False
        self._handle = asyncio.get_running_loop().call_later(delay, self._fire)

    def _fire(self) -> None:
        self._fired = True
        self._task.cancel()

    def disarm(self) -> bool:
        self._handle.cancel()
        return self._fired and self._task.uncancel() <= self._cancelling


class UpstreamChunkStream(ChunkStream):
    """The rest of an upstream's streamed response: the chunks of each read, as they come. What
    has arrived already is taken without waiting; ``on_wait`` is called before a read that must
    wait (under load a fast upstream's whole answer is often in by then, and nothing waits)."""

    signals_waits = True

    def __init__(self, resp: aiohttp.ClientResponse, decoder: StreamDecoder, first: list[Event]) -> None:
        super().__init__(self._read(resp, decoder, first), abort=resp.close, decoder=decoder)

    async def _read(
        self, resp: aiohttp.ClientResponse, decoder: StreamDecoder, first: list[Event]
    ) -> AsyncGenerator[list[Event], None]:
        content = resp.content
        try:
            yield first
            while True:
                try:
                    data = content.read_nowait()
                    if not data and not content.at_eof():
                        self.on_wait()
                        data = await content.readany()
                except (aiohttp.ClientError, ConnectionError) as exc:
                    raise UpstreamError("connect", f"stream broke: {exc}") from exc
                if not data:
                    break
                if events := decoder.feed_events(data):
                    yield events
            if events := decoder.finish_events():
                yield events
        finally:
            resp.close()


def _nothing() -> None:
    pass


def estimated_count(body: dict) -> dict:
    """``{"input_tokens": N}`` for a Chat body's prompt, where no upstream counts it."""
    # About four bytes a token, as elsewhere where the upstream gives no count.
    size = len(orjson.dumps(body["messages"])) + (len(orjson.dumps(body["tools"])) if body.get("tools") else 0)
    return {"input_tokens": (size + 3) // 4}
