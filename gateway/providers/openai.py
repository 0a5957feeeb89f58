"""Any OpenAI-compatible Chat Completions server: the body passes through almost untouched."""

from __future__ import annotations

import hashlib
import json
import os
from typing import Any

import orjson

from gateway.providers.base import (
    Provider,
    ProviderConfig,
    StreamDecoder,
    UpstreamError,
    UpstreamRequest,
    classify_status,
)
from gateway.providers.shapes import load_upstream_json
from gateway.providers.sse import SSEParser

DEFAULT_BASE_URL = "https://api.openai.com/v1"
# OpenAI rejects longer tool call ids; ids minted by other wire formats may be longer.
MAX_TOOL_CALL_ID_LENGTH = 40
# Errors sent inside a stream carry a type but no HTTP status.
_STREAM_ERROR_STATUS = {"invalid_request_error": 400, "rate_limit_error": 429, "rate_limit_exceeded": 429}


class OpenAIProvider(Provider):
    def __init__(self, config: ProviderConfig) -> None:
        super().__init__(config)
        base_url = config.options.get("base_url") or DEFAULT_BASE_URL
        self.url = base_url.rstrip("/") + "/chat/completions"
        self.api_key_env: str | None = config.options.get("api_key_env")

    async def prepare(self, *, body: dict, model: str, stream: bool) -> UpstreamRequest:
        payload = {**body, "model": model, "messages": _fit_tool_call_ids(body.get("messages", []))}
        if stream:
            # Usage settles the bill, so it is requested whatever the client asked for.
            payload["stream"] = True
            payload["stream_options"] = {**(body.get("stream_options") or {}), "include_usage": True}
        else:
            payload.pop("stream", None)
            payload.pop("stream_options", None)
        headers = {"Content-Type": "application/json"}
        if self.api_key_env:
            headers["Authorization"] = f"Bearer {os.environ.get(self.api_key_env, '')}"
        return UpstreamRequest(url=self.url, headers=headers, body=orjson.dumps(payload))

    def parse_response(self, *, body: bytes, model: str) -> dict:
        answer = load_upstream_json(body)
        if not isinstance(answer, dict) or "choices" not in answer:
            raise UpstreamError("server", f"unexpected answer: {body[:200]!r}")
        return answer

    def stream_decoder(self, *, model: str) -> StreamDecoder:
        return OpenAIStreamDecoder()

    def classify_error(self, *, status: int, headers: Any, body: bytes) -> UpstreamError:
        return classify_status(status, headers, error_message(body))


def error_message(body: bytes) -> str:
    """The message of ``{"error": {...}}``; compatible servers sometimes send a bare string."""
    text = body[:500].decode("utf-8", "replace")
    try:
        data = json.loads(body)
    except ValueError:
        return text
    error = data.get("error") if isinstance(data, dict) else None
    if isinstance(error, dict):
        return str(error.get("message") or error)
    return error if isinstance(error, str) else text


def _fit_tool_call_ids(messages: list[dict]) -> list[dict]:
    """Replace over-long ids by a stable digest, the same on the call and on its result."""

    def fit(call_id: str) -> str:
        if len(call_id) <= MAX_TOOL_CALL_ID_LENGTH:
            return call_id
        return "call_" + hashlib.sha256(call_id.encode()).hexdigest()[:32]

    fitted = []
    for message in messages:
        if message.get("tool_calls"):
            calls = [{**call, "id": fit(call.get("id", ""))} for call in message["tool_calls"]]
            message = {**message, "tool_calls": calls}
        if message.get("tool_call_id"):
            message = {**message, "tool_call_id": fit(message["tool_call_id"])}
        fitted.append(message)
    return fitted


class OpenAIStreamDecoder(StreamDecoder):
    """Passes chunks through; holds the usage back so it always comes last, on its own chunk.

    A compatible server that ignores ``include_usage`` sends none: then no usage chunk is made
    up here, and the gateway estimates the usage as for a stream cut short.
    """

    def __init__(self) -> None:
        self._sse = SSEParser()
        self._finished = False
        self._ended = False
        self._usage_chunk: dict | None = None

    def feed(self, data: bytes) -> list[dict]:
        return self._decode(self._sse.feed_data(data))

    def finish(self) -> list[dict]:
        return self._decode(self._sse.finish_data()) + self._end()

    @property
    def complete(self) -> bool:
        return self._ended

    def _decode(self, events: list[bytes]) -> list[dict]:
        chunks: list[dict] = []
        for data in events:
            if self._ended:
                break
            if data.strip() == b"[DONE]":
                chunks += self._end()
                continue
            try:
                chunk = orjson.loads(data)
            except ValueError:
                # Read as text first, as any other event: bytes that are not UTF-8 are replaced.
                chunk = load_upstream_json(data.decode("utf-8", "replace"))
            if not isinstance(chunk, dict):
                raise UpstreamError("server", f"unexpected event: {data[:200].decode('utf-8', 'replace')}")
            if "error" in chunk:
                raise _stream_error(chunk["error"])
            if usage := chunk.pop("usage", None):
                self._usage_chunk = {**chunk, "usage": usage, "choices": []}
            choices = chunk.get("choices")
            if not choices:
                continue
            if not self._finished:
                for choice in choices:
                    if choice.get("finish_reason"):
                        self._finished = True
                        break
            chunks.append(chunk)
        return chunks

    def _end(self) -> list[dict]:
        if self._ended:
            return []
        if not self._finished:
            raise UpstreamError("server", "stream ended before the answer finished")
        self._ended = True
        return [self._usage_chunk] if self._usage_chunk is not None else []


def _stream_error(error: Any) -> UpstreamError:
    if not isinstance(error, dict):
        return UpstreamError("server", str(error))
    status = _STREAM_ERROR_STATUS.get(error.get("type") or error.get("code") or "", 500)
    return classify_status(status, None, str(error.get("message") or error))
