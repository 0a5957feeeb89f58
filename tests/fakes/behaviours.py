"""What a fake upstream does with one request. Script them with ``fake.script(...)``."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Reply:
    """A normal answer, streamed if the request asked for a stream.

    Left empty, it follows the request: a tool result last -> a text quoting the results;
    tools offered (and not refused) -> a call to the first tool with arguments built from its
    schema (``parallel=True``: one call to every tool); otherwise a text quoting the last
    message. ``text`` or ``tool_calls`` (name, arguments) force the answer; ``delay_s`` holds it.
    ``thinks``: asked for its thinking, the model has some to show (``False``: it answers at once).
    """

    text: str | None = None
    tool_calls: tuple[tuple[str, dict], ...] | None = None
    parallel: bool = False
    # Seconds to wait before answering: calls that overlap in time.
    delay_s: float = 0.0
    thinks: bool = True


@dataclass(frozen=True)
class Hang:
    """Never answer: the caller has to time out."""


@dataclass(frozen=True)
class Status:
    """An error status with a body in the upstream's error shape, optionally ``Retry-After``."""

    status: int
    retry_after: str | None = None
    message: str = "fake upstream error"


@dataclass(frozen=True)
class Reset:
    """Reset the TCP connection (RST) before answering anything."""


@dataclass(frozen=True)
class DieBeforeFirstByte:
    """Send the 200 status line and headers, then drop the connection before any body byte."""


@dataclass(frozen=True)
class DieMidway:
    """Send the first ``events`` events of a streamed answer (half of a plain body), then drop."""

    events: int = 1


@dataclass(frozen=True)
class StreamError:
    """Send the first ``events`` events, then an error event standing for ``status``, then end."""

    status: int = 529
    events: int = 1


@dataclass(frozen=True)
class Raw:
    """Answer exactly this body, e.g. a recorded one."""

    body: bytes | str
    status: int = 200
    content_type: str = "application/json"


Behaviour = Reply | Hang | Status | Reset | DieBeforeFirstByte | DieMidway | StreamError | Raw
