"""Server-sent events framing shared by every streaming wire format.

Upstreams differ in the details: OpenAI separates events with ``\\n\\n``, Vertex with
``\\r\\n\\r\\n``, Claude on Vertex pads ``data:`` lines with spaces. Reads arrive in arbitrary
slices, so a separator (even a ``\\r\\n`` pair) may be cut in two between ``feed`` calls.
"""

from __future__ import annotations

from dataclasses import dataclass

from gateway.providers.base import StreamDecoder, UpstreamError
from gateway.providers.shapes import load_upstream_json


@dataclass(slots=True)  # not frozen: see counters.Bucket
class SSEEvent:
    event: str
    data: str


class SSEParser:
    def __init__(self) -> None:
        self._buffer = b""
        self._held_cr = b""
        # Whether the data of some event so far was of several lines (``feed_data``): such data
        # cannot be framed again as one ``data:`` line.
        self.joined_lines = False

    def feed(self, data: bytes) -> list[SSEEvent]:
        return [event for block in self._blocks(data) if (event := _parse_block(block))]

    def finish(self) -> list[SSEEvent]:
        """The last event, when the upstream closed without the blank line that ends it."""
        event = _parse_block(self._last_block())
        return [event] if event else []

    def feed_data(self, data: bytes) -> list[bytes]:
        """Only the data of each event, as bytes, for a decoder that reads no event names: an
        event of one ``data:`` line (nearly all) is not decoded into text nor made an SSEEvent.
        What arrived of a stream without CRs (OpenAI's) whose events are all one ``data: `` line
        each is split in one go, with no call per event."""
        if self._held_cr or data.find(b"\r") >= 0:
            blocks = self._blocks(data)
        else:
            text = self._buffer + data
            end = text.rfind(b"\n\n")
            if end < 0:
                self._buffer = text
                return []
            events, self._buffer = text[:end], text[end + 2:]
            # Every newline is in a separator followed by "data: ": no other line, no empty event.
            if events.startswith(b"data: ") and events.count(b"\n") == 2 * events.count(b"\n\ndata: "):
                return events[6:].split(b"\n\ndata: ")
            blocks = events.split(b"\n\n")
        return [found for block in blocks if (found := self._data_of(block)) is not None]

    def finish_data(self) -> list[bytes]:
        # Nearly always the stream ended with its blank line, and nothing is left.
        found = self._data_of(block) if (block := self._last_block()) else None
        return [] if found is None else [found]

    def _data_of(self, block: bytes) -> bytes | None:
        found = _data_of(block)
        if found is not None and found.find(b"\n") >= 0:
            self.joined_lines = True
        return found

    def _blocks(self, data: bytes) -> list[bytes]:
        data = self._held_cr + data
        # A trailing CR may be the first half of a CRLF; wait for the next read to decide.
        self._held_cr = b"\r" if data.endswith(b"\r") else b""
        if self._held_cr:
            data = data[:-1]
        *blocks, self._buffer = (self._buffer + data.replace(b"\r\n", b"\n").replace(b"\r", b"\n")).split(b"\n\n")
        return blocks

    def _last_block(self) -> bytes:
        block, self._buffer, self._held_cr = self._buffer, b"", b""
        return block.strip(b"\n")


def _one_data_line(block: bytes) -> bytes | None:
    """The data of an event that is one ``data:`` line (nearly every event; what the general
    case of ``_parse_block`` makes of it too), or None for any other block."""
    # find, not ``in``: a bytes ``in`` first tries its operand as an integer and formats a
    # TypeError to throw away (~1,900 instructions), for every event.
    if block.startswith(b"data:") and block.find(b"\n") < 0:
        return block[5:].removeprefix(b" ")
    return None


def _data_of(block: bytes) -> bytes | None:
    if (data := _one_data_line(block)) is not None:
        return data
    event = _parse_block(block)
    return None if event is None else event.data.encode()


def _parse_block(block: bytes) -> SSEEvent | None:
    if (data := _one_data_line(block)) is not None:
        return SSEEvent("message", data.decode("utf-8", "replace"))
    event = "message"
    data_lines = []
    for line in block.decode("utf-8", "replace").split("\n"):
        if not line or line.startswith(":"):
            continue
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "event":
            event = value.strip()
        elif name == "data":
            data_lines.append(value)
    if not data_lines:
        return None
    return SSEEvent(event=event, data="\n".join(data_lines))


class JSONEventDecoder(StreamDecoder):
    """A stream of JSON events that ends with an explicit last event (Gemini's finish reasons,
    Claude's ``message_stop``). Subclasses translate one event at a time and set
    ``_finished`` on the last one; a stream that closes before it is a broken stream."""

    unfinished = "stream ended before the answer finished"

    def __init__(self) -> None:
        self._sse = SSEParser()
        self._finished = False

    def feed(self, data: bytes) -> list[dict]:
        return self._decode(self._sse.feed(data))

    def finish(self) -> list[dict]:
        chunks = self._decode(self._sse.finish())
        if not self._finished:
            raise UpstreamError("server", self.unfinished)
        return chunks

    @property
    def complete(self) -> bool:
        return self._finished

    def _decode(self, events: list[SSEEvent]) -> list[dict]:
        chunks: list[dict] = []
        for event in events:
            if self._finished:
                break
            chunks += self._translate(load_upstream_json(event.data))
        return chunks

    def _translate(self, data) -> list[dict]:
        raise NotImplementedError
