"""Client APIs: what each endpoint of the proxy parses and renders around the shared pipeline.

A dialect turns its client's request into the internal call (a Chat Completions body, which every
provider translates from: ``ChatRequest``) and renders the internal answer, a stream's events and
the gateway's errors back in its own shape. Everything else — keys, limits, the reservation, the
chain, the log and the settle — is the pipeline's (gateway/pipeline.py), the same for each.
A dialect may also have ``async prepare(state, call)``, run once the key is known and the body
parsed (the Responses API loads the stored conversation a request continues), and
``authorization(scope)``, the ``Bearer`` credential from where its clients send their key (the
Messages API's ``x-api-key``). A request may carry the call in its client's own wire format
(``native``, a ``NativeCall``), which a provider that speaks that format takes as it came.
"""

from __future__ import annotations

from typing import Protocol

from gateway.dialects.chat_completions_request import ChatRequest
from gateway.errors import GatewayError
from gateway.providers.base import Event
from gateway.summary import CallSummary


class StreamRenderer(Protocol):
    """One stream's events in a client API's shape; it may keep what the stream needs between
    them (open items, sequence numbers)."""

    def events(self, batch: list[Event]) -> bytes:
        """What the client gets of a batch of the upstream's chunks (b"": nothing)."""

    def end(self, summary: CallSummary) -> bytes:
        """The end of a stream that completed; ``summary``: what the whole answer was."""

    def failed(self, error: GatewayError) -> bytes:
        """The end of a stream that broke after its head was sent."""


class Dialect(Protocol):
    # The endpoint's name in the request log and a call's trail (``chat.completions``).
    endpoint: str

    def parse(self, raw: bytes, scope) -> ChatRequest:
        """The client's body as the internal call; a ``GatewayError`` (400) if it is malformed."""

    async def answer(self, send, request: ChatRequest, completion: dict, headers: dict[str, str]) -> None:
        """Sends a whole answer (a chat completion) as this API's response."""

    def stream(self, request: ChatRequest) -> StreamRenderer:
        """The renderer of one streamed answer."""

    def replay(self, request: ChatRequest, completion: dict) -> bytes:
        """A whole answer (from the cache) as this API's stream, end included."""

    async def refuse(self, send, error: GatewayError, headers: dict[str, str]) -> None:
        """Sends the gateway's error in this API's shape."""
