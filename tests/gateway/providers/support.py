"""Recorded provider traffic and small helpers to feed it through decoders."""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from gateway.providers.base import StreamDecoder

# The shared folder sits beside the repository's root.
RECORDINGS = Path(__file__).resolve().parents[3] / ".." / "shared" / "recordings"
OPENAI = "openai-gpt-4o"
GEMINI = "vertex-gemini-2-5-flash"
CLAUDE = "vertex-claude-3-7-sonnet"


@dataclass(frozen=True)
class Interaction:
    url: str
    request_body: str
    response_body: str
    status: int

    @property
    def request(self) -> Any:
        return json.loads(self.request_body)

    @property
    def response(self) -> Any:
        return json.loads(self.response_body)


def cassette(folder: str, name: str) -> list[Interaction]:
    path = RECORDINGS / folder / f"{name}.yaml"
    if not path.exists():
        pytest.skip(f"recording {path} is not available")
    recorded = yaml.safe_load(path.read_text())
    return [
        Interaction(
            url=interaction["request"]["url"],
            request_body=interaction["request"]["body"],
            response_body=interaction["response"]["body"],
            status=interaction["response"]["code"],
        )
        for interaction in recorded["interactions"]
    ]


def decode(decoder: StreamDecoder, body: bytes) -> list[dict]:
    """Feed a whole stream body at once."""
    return decoder.feed(body) + decoder.finish()


def decode_in_slices(decoder: StreamDecoder, body: bytes, *, seed: int) -> list[dict]:
    """Feed a stream body in random slices of 1 to 16 bytes, as a network may deliver it."""
    slicer = random.Random(seed)
    chunks: list[dict] = []
    start = 0
    while start < len(body):
        end = start + slicer.randint(1, 16)
        chunks += decoder.feed(body[start:end])
        start = end
    return chunks + decoder.finish()


def without_volatile_fields(chunks: list[dict]) -> list[dict]:
    """Chunks with the fields that differ between two decodings of one stream blanked."""
    return json.loads(json.dumps(chunks), object_hook=_blank_volatile)


def _blank_volatile(obj: dict) -> dict:
    return {key: ("*" if key in ("id", "created") else value) for key, value in obj.items()}


def streamed_text(chunks: list[dict]) -> str:
    return "".join(choice["delta"].get("content") or "" for chunk in chunks for choice in chunk["choices"])


def streamed_tool_calls(chunks: list[dict]) -> list[dict]:
    """Tool call deltas assembled by index, as an OpenAI client does."""
    calls: dict[int, dict] = {}
    for chunk in chunks:
        for choice in chunk["choices"]:
            for delta in choice["delta"].get("tool_calls") or []:
                call = calls.setdefault(delta["index"], {"id": None, "name": None, "arguments": ""})
                call["id"] = delta.get("id") or call["id"]
                function = delta.get("function") or {}
                call["name"] = function.get("name") or call["name"]
                call["arguments"] += function.get("arguments") or ""
    return [calls[index] for index in sorted(calls)]


def finish_reasons(chunks: list[dict]) -> list[str]:
    return [choice["finish_reason"] for chunk in chunks for choice in chunk["choices"] if choice["finish_reason"]]


def sse(*events: dict | str, separator: str = "\n\n") -> bytes:
    """A stream body made of ``data:`` events (strings go as they are, e.g. ``[DONE]``)."""
    lines = [event if isinstance(event, str) else json.dumps(event) for event in events]
    return "".join(f"data: {line}{separator}" for line in lines).encode()


def tool_call_deltas(chunks: list[dict]) -> list[dict]:
    return [
        delta for chunk in chunks for choice in chunk["choices"] for delta in choice["delta"].get("tool_calls") or []
    ]
