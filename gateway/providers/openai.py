"""Any OpenAI-compatible Chat Completions server: the body passes through almost untouched."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import struct
from typing import Any

import orjson

from gateway.providers.base import (
    Event,
    Provider,
    ProviderConfig,
    StreamDecoder,
    UpstreamError,
    UpstreamRequest,
    classify_status,
)
from gateway.providers.shapes import input_tokens, load_upstream_json, max_output_tokens
from gateway.providers.sse import SSEParser
from gateway.providers.thinking import THINKING_BUDGET

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
        self.embeddings_url = base_url.rstrip("/") + "/embeddings"
        self.api_key_env: str | None = config.options.get("api_key_env")
        # Where the gateway's own output cap goes (a client's own limit passes as it came):
        # OpenAI's current field by default; older compatible servers know only max_tokens.
        self.max_tokens_field: str = config.options.get("max_tokens_field") or "max_completion_tokens"

    async def prepare(self, *, body: dict, model: str, stream: bool, output_cap: int | None = None) -> UpstreamRequest:
        payload = {**body, "model": model, "messages": _fit_tool_call_ids(body.get("messages", []))}
        # A compatible server shows its thinking by itself (reasoning_content), or has none.
        payload.pop(THINKING_BUDGET, None)
        if output_cap is not None and max_output_tokens(body) is None:
            payload[self.max_tokens_field] = output_cap
        if stream:
            # Usage settles the bill, so it is requested whatever the client asked for.
            payload["stream"] = True
            payload["stream_options"] = {**(body.get("stream_options") or {}), "include_usage": True}
        else:
            payload.pop("stream", None)
            payload.pop("stream_options", None)
        return UpstreamRequest(url=self.url, headers=self._headers(), body=orjson.dumps(payload))

    def parse_response(self, *, body: bytes, model: str) -> dict:
        answer = load_upstream_json(body)
        if not isinstance(answer, dict) or "choices" not in answer:
            raise UpstreamError("server", f"unexpected answer: {body[:200]!r}")
        return answer

    def stream_decoder(self, *, model: str, body: dict) -> StreamDecoder:
        return OpenAIStreamDecoder(include_usage=bool((body.get("stream_options") or {}).get("include_usage")))

    def classify_error(self, *, status: int, headers: Any, body: bytes) -> UpstreamError:
        return classify_status(status, headers, error_message(body))

    async def prepare_embedding(self, *, body: dict, model: str) -> list[UpstreamRequest]:
        payload = {**body, "model": model, "encoding_format": "float"}
        return [UpstreamRequest(url=self.embeddings_url, headers=self._headers(), body=orjson.dumps(payload))]

    def parse_embedding(self, *, bodies: list[bytes], body: dict, model: str) -> dict:
        return embedding_answer(load_upstream_json(bodies[0]), model=model, estimated_tokens=input_tokens(body))

    def _headers(self) -> dict[str, str]:
        headers = {"Content-Type": "application/json"}
        if self.api_key_env:
            headers["Authorization"] = f"Bearer {os.environ.get(self.api_key_env, '')}"
        return headers


def embedding_answer(answer: Any, *, model: str, estimated_tokens: int) -> dict:
    """An OpenAI-compatible server's embeddings, checked, with float vectors (a server that
    answers base64 whatever it was asked is decoded). A server that counts no usage is charged
    ``estimated_tokens``."""
    data = answer.get("data") if isinstance(answer, dict) else None
    if not isinstance(data, list) or not data:
        raise UpstreamError("server", f"unexpected answer: {str(answer)[:200]}")
    vectors = []
    for position, item in enumerate(data):
        vector = item.get("embedding") if isinstance(item, dict) else None
        if isinstance(vector, str):
            vector = decode_base64_vector(vector)
        if not isinstance(vector, list):
            raise UpstreamError("server", f"unexpected embedding at {position}: {str(item)[:200]}")
        index = item.get("index", position)
        vectors.append({"object": "embedding", "index": index if isinstance(index, int) else position,
                        "embedding": vector})
    usage = answer.get("usage") if isinstance(answer.get("usage"), dict) else {}
    prompt_tokens = usage.get("prompt_tokens")
    if not isinstance(prompt_tokens, int) or isinstance(prompt_tokens, bool) or prompt_tokens <= 0:
        prompt_tokens = estimated_tokens
    return {"object": "list", "data": sorted(vectors, key=lambda item: item["index"]),
            "model": answer.get("model") or model,
            "usage": {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens}}


def decode_base64_vector(value: str) -> list[float]:
    try:
        raw = base64.b64decode(value, validate=True)
    except ValueError as exc:
        raise UpstreamError("server", f"an embedding that is not base64: {exc}") from exc
    if len(raw) % 4:
        raise UpstreamError("server", "an embedding of a length that is not float32s")
    return list(struct.unpack(f"<{len(raw) // 4}f", raw))


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
    """Replace over-long ids by a stable digest, the same on the call and on its result; and
    leave out another model's thinking (a Gemini step's), which servers that think refuse back."""

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
        if "reasoning_signature" in message:
            message = {k: v for k, v in message.items() if k not in ("reasoning_content", "reasoning_signature")}
        fitted.append(message)
    return fitted


class OpenAIStreamDecoder(StreamDecoder):
    """Passes chunks through; holds the usage back so it always comes last, on its own chunk.

    A chunk goes on as the upstream's own bytes unless it had to change: the usage taken off a
    chunk that also carries choices, or the ``"usage": null`` OpenAI puts on every chunk once
    usage is asked for, which the gateway always asks for and the client may not have
    (``include_usage``: it did).

    A compatible server that ignores ``include_usage`` sends none: then no usage chunk is made
    up here, and the gateway estimates the usage as for a stream cut short.
    """

    def __init__(self, *, include_usage: bool = False) -> None:
        self._include_usage = include_usage
        self._sse = SSEParser()
        self._finished = False
        self._ended = False
        self._usage_event: Event | None = None

    def feed(self, data: bytes) -> list[dict]:
        return [chunk for chunk, _ in self.feed_events(data)]

    def finish(self) -> list[dict]:
        return [chunk for chunk, _ in self.finish_events()]

    def feed_events(self, data: bytes) -> list[Event]:
        return self._decode(self._sse.feed_data(data))

    def finish_events(self) -> list[Event]:
        return self._decode(self._sse.finish_data()) + self._end()

    @property
    def complete(self) -> bool:
        return self._ended

    def _decode(self, found: list[bytes]) -> list[Event]:
        events: list[Event] = []
        for data in found:
            if self._ended:
                break
            # A chunk is an object: only what does not start like one may be the end.
            if data[:1] != b"{" and data.strip() == b"[DONE]":
                events += self._end()
                continue
            # Sent on as it came, unless an event's data was of several lines (then its chunk is
            # encoded again rather than framed in one line again).
            encoded = None if self._sse.joined_lines else b"data: " + data + b"\n\n"
            try:
                chunk = orjson.loads(data)
            except ValueError:
                # Read as text first, as any other event: bytes that are not UTF-8 are replaced.
                chunk, encoded = load_upstream_json(data.decode("utf-8", "replace")), None
            if not isinstance(chunk, dict):
                raise UpstreamError("server", f"unexpected event: {data[:200].decode('utf-8', 'replace')}")
            if "error" in chunk:
                raise _stream_error(chunk["error"])
            choices = chunk.get("choices")
            usage = chunk.get("usage")
            if usage:
                del chunk["usage"]
                # The usage chunk as OpenAI sends it has no choices: then it goes on unchanged.
                self._usage_event = ({**chunk, "usage": usage, "choices": []}, encoded if choices == [] else None)
                encoded = None
            elif "usage" in chunk and (usage is not None or not self._include_usage):
                del chunk["usage"]
                encoded = None
            if not choices:
                continue
            if not self._finished:
                for choice in choices:
                    if choice.get("finish_reason"):
                        self._finished = True
                        break
            events.append((chunk, encoded))
        return events

    def _end(self) -> list[Event]:
        if self._ended:
            return []
        if not self._finished:
            raise UpstreamError("server", "stream ended before the answer finished")
        self._ended = True
        return [self._usage_event] if self._usage_event is not None else []


def _stream_error(error: Any) -> UpstreamError:
    if not isinstance(error, dict):
        return UpstreamError("server", str(error))
    status = _STREAM_ERROR_STATUS.get(error.get("type") or error.get("code") or "", 500)
    return classify_status(status, None, str(error.get("message") or error))
