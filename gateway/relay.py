"""A streamed answer on its way to the client, whatever its client API; and a cached one replayed.

The relay sends the upstream's events as they come and notices a client that goes away. The
events of the read that ended the answer are held back: the pipeline records the call first,
then ``finish`` sends them with the stream's end, so the call is durable once the client is
done (the client waits for that end anyway), in one write instead of two.
"""

from __future__ import annotations

import asyncio

from gateway.dialects import Dialect
from gateway.dialects.chat_completions_request import ChatRequest
from gateway.errors import GatewayError
from gateway.http import start_event_stream
from gateway.providers.base import ChunkStream, UpstreamError
from gateway.summary import CallSummary


class StreamRelay:
    def __init__(self, dialect: Dialect, request: ChatRequest, chunks: ChunkStream, summary: CallSummary,
                 receive, send, *, headers: dict[str, str]) -> None:
        self.render = dialect.stream(request)
        self.chunks = chunks
        self.summary = summary
        self.receive = receive
        self.send = send
        self.client_left = False
        # The response's head goes out with its first events, in the same turn of the loop, so
        # the two leave in one write (an answer that is all in at once: head and answer after
        # the call is recorded).
        self._head: dict[str, str] | None = headers
        self._held = b""
        self._watching: asyncio.Task | None = None

    async def relay(self) -> UpstreamError | None:
        """Relays the stream until it ends (None) or breaks (its error; a client that left
        breaks it too, see ``client_left``). The chunks are taken into the call's summary."""
        chunks = self.chunks
        on_wait = chunks.on_wait
        # The watch of the client gets a task of its own only from the first time the relay
        # has to wait for the upstream (a client that left meanwhile is seen then): a stream
        # whose answer is in by then needs no watch.
        if chunks.signals_waits:
            chunks.on_wait = self._watch
        else:
            self._watch()
        take, render = self.summary.take_chunk, self.render.events
        try:
            # What one upstream read brought goes out in one write: nothing waits for more.
            async for batch in chunks.events():
                for chunk, _ in batch:
                    take(chunk)
                events = render(batch)
                if not events:
                    continue
                if chunks.complete:
                    self._held += events
                else:
                    await self._write(events, more=True)
        except UpstreamError as broken:
            return broken
        finally:
            # The relay, its chunks and its watch refer to each other until here (the watch's
            # task through the cancellation it ends in): without these references they are freed
            # as the call ends, not by the cyclic collector, whose passes cost 25 - 55 k
            # instructions a stream at moments no call chose (freeing them now costs about that).
            chunks.on_wait = on_wait
            if self._watching is not None:
                self._watching.cancel()
                self._watching = None
            # try/except rather than contextlib.suppress on this path: a context manager object
            # and three calls per stream (~4 k instructions each).
            try:
                await chunks.aclose()
            except Exception:
                pass
        return None

    async def finish(self, failure: GatewayError | None) -> None:
        """Sends what was held and the stream's end (``failure``: it broke), unless the client left."""
        if self.client_left:
            return
        ending = self.render.end(self.summary) if failure is None else self.render.failed(failure)
        try:
            await self._write(self._held + ending, more=False)
        except OSError:
            pass

    async def _write(self, body: bytes, *, more: bool) -> None:
        if self._head is not None:
            await start_event_stream(self.send, self._head)
            self._head = None
        await self.send({"type": "http.response.body", "body": body, "more_body": more})

    def _watch(self) -> None:
        if self._watching is None:
            self._watching = asyncio.create_task(self._watch_disconnect())

    async def _watch_disconnect(self) -> None:
        while (await self.receive())["type"] != "http.disconnect":
            pass
        self.client_left = True
        # The upstream read the relay waits on ends at once (in an UpstreamError).
        self.chunks.abort()


async def replay(dialect: Dialect, request: ChatRequest, completion: dict, send, headers: dict[str, str]) -> None:
    """A cached answer, sent as the client asked for it: whole, or as a stream."""
    if not request.stream:
        await dialect.answer(send, request, completion, headers)
        return
    await start_event_stream(send, headers)
    await send({"type": "http.response.body", "body": dialect.replay(request, completion)})
