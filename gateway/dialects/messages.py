"""``POST /v1/messages`` and ``POST /v1/messages/count_tokens``: Anthropic's Messages API, which
Claude Code, the Anthropic SDK and the Claude Agent SDK speak.

A call served by a ``vertex_anthropic`` link went upstream as it came and comes back as the
upstream's own bytes, whole or streamed (``NativeCall``). Any other link served the internal Chat
Completions call (gateway/dialects/messages_request.py), and its answer is rendered here as a
Message, its stream as Anthropic's events in their order — ``message_start``,
``content_block_start``, ``ping``, ``content_block_delta`` (``text_delta``,
``input_json_delta``), ``content_block_stop``, ``message_delta`` with the stop reason and the
usage, ``message_stop`` — as the recordings in ``shared/recordings/anthropic-claude-sonnet-4/``
show them. What such a link thought (``reasoning_content``) is a ``thinking`` block before the
answer's, streamed as ``thinking_delta``s and a ``signature_delta``, under the signature the
gateway made for it (gateway/providers/thinking.py). A stream that breaks midway ends in an
``error`` event. Errors are Anthropic's ``{"type": "error", "error": {"type", "message"}}``,
with the gateway's code and param under ``error.nemo``, so the Anthropic SDK raises its own
classes.
"""

from __future__ import annotations

import time
from urllib.parse import parse_qs

import orjson

from gateway.dialects.messages_request import (
    CountTokensRequest,
    MessagesRequest,
    parse_count_tokens_request,
    parse_messages_request,
)
from gateway.errors import GatewayError, invalid_request
from gateway.http import header, send_json, send_json_bytes
from gateway.providers.base import Event
from gateway.providers.shapes import parse_arguments
from gateway.providers.thinking import UNSIGNED, reasoning_of
from gateway.summary import CallSummary

# An error's type in Anthropic's shape, by its status.
_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    422: "invalid_request_error",
    429: "rate_limit_error",
    529: "overloaded_error",
}
# finish_reason of a chat completion -> stop_reason of a Message.
_STOP_REASONS = {"stop": "end_turn", "length": "max_tokens", "tool_calls": "tool_use", "function_call": "tool_use",
                 "content_filter": "refusal"}
# Claude Code's metadata.user_id ends with its session: the run of a client that sends no X-Nemo-Run.
_SESSION_MARK = "_session_"


def error_body(error: GatewayError) -> dict:
    kind = _ERROR_TYPES.get(error.status, "api_error")
    return {"type": "error", "error": {"type": kind, "message": error.message,
                                       "nemo": {"code": error.code, "param": error.param}}}


def authorization(scope) -> str | None:
    """The key as ``Authorization: Bearer`` or, as Anthropic's clients send it, ``x-api-key``."""
    bearer = header(scope, b"authorization")
    if bearer is not None:
        return bearer
    key = header(scope, b"x-api-key")
    return None if key is None else f"Bearer {key}"


def is_anthropic_client(scope) -> bool:
    """A client of Anthropic's API: it names the API's version, or sends its key as ``x-api-key``
    (an OpenAI client sends neither)."""
    return header(scope, b"anthropic-version") is not None or (
        header(scope, b"authorization") is None and header(scope, b"x-api-key") is not None)


# --- GET /v1/models for Anthropic's clients --------------------------------------------------------

# How many models a page holds unless the client says (Anthropic's default), and at most.
MODEL_PAGE = 20
MAX_MODEL_PAGE = 1000


def model_info(name: str, created: float) -> dict:
    """A model in Anthropic's shape (the gateway's model name is its id and its name)."""
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(created))
    return {"type": "model", "id": name, "display_name": name, "created_at": stamp}


def model_page(names: list[str], created: float, query: bytes) -> dict:
    """One page of the models, in Anthropic's list shape: ``limit``, and ``after_id`` or
    ``before_id`` to page on; an id of no model on the list is a 400."""
    params = parse_qs(query.decode("latin-1"))
    limit = params.get("limit", [str(MODEL_PAGE)])[0]
    if not limit.isdigit() or not 1 <= int(limit) <= MAX_MODEL_PAGE:
        raise invalid_request(f"limit must be an integer from 1 to {MAX_MODEL_PAGE}", param="limit")
    start, end = 0, len(names)
    for name in ("after_id", "before_id"):
        if (given := params.get(name, [None])[0]) is not None and given not in names:
            raise invalid_request(f"{name} {given!r} is not a model of this list", param=name)
    if after := params.get("after_id", [None])[0]:
        start = names.index(after) + 1
    if before := params.get("before_id", [None])[0]:
        end = names.index(before)
        start = max(start, end - int(limit))
    shown = names[start:end][: int(limit)]
    # (Paging back, what is left is before the page.)
    more = start > 0 if before else start + len(shown) < end
    return {"data": [model_info(name, created) for name in shown], "has_more": more,
            "first_id": shown[0] if shown else None, "last_id": shown[-1] if shown else None}


def _session_run(request) -> str:
    user_id = (request.native.body.get("metadata") or {}).get("user_id")
    if isinstance(user_id, str) and _SESSION_MARK in user_id:
        return user_id.rsplit(_SESSION_MARK, 1)[1][:200]
    return ""


class _AnthropicAPI:
    """What both endpoints share: where the key comes from, the run, the error shape."""

    authorization = staticmethod(authorization)

    async def prepare(self, state, call) -> None:
        call.request.message_id = "msg_" + call.request_id.removeprefix("req_")
        if not call.run_id:
            call.run_id = _session_run(call.request)

    async def refuse(self, send, error: GatewayError, headers: dict[str, str]) -> None:
        await send_json(send, error.status, error_body(error), headers)


class Messages(_AnthropicAPI):
    endpoint = "messages"

    def parse(self, raw: bytes, scope) -> MessagesRequest:
        return parse_messages_request(raw, tags_header=header(scope, b"x-nemo-tags"),
                                      beta=header(scope, b"anthropic-beta"))

    async def answer(self, send, request: MessagesRequest, completion: dict, headers: dict[str, str]) -> None:
        if request.native.answer is not None:
            await send_json_bytes(send, 200, request.native.answer, headers)
        else:
            await send_json(send, 200, message_from_completion(request, completion), headers)

    def stream(self, request: MessagesRequest) -> MessagesStream:
        return MessagesStream(request)

    def replay(self, request: MessagesRequest, completion: dict) -> bytes:
        """A cached Message as a stream: Claude's own (``native.answer``, kept with the cache
        entry), or the one a translated answer is."""
        answer = request.native.answer
        message = orjson.loads(answer) if answer is not None else message_from_completion(request, completion)
        return message_events(message)


class CountTokens(_AnthropicAPI):
    endpoint = "messages.count_tokens"

    def parse(self, raw: bytes, scope) -> CountTokensRequest:
        return parse_count_tokens_request(raw, tags_header=header(scope, b"x-nemo-tags"),
                                          beta=header(scope, b"anthropic-beta"))

    async def answer(self, send, request: CountTokensRequest, completion: dict, headers: dict[str, str]) -> None:
        await send_json(send, 200, {"input_tokens": completion["input_tokens"]}, headers)


# --- the Message ---------------------------------------------------------------------------------

def message_usage(*, prompt: int, cached: int, written: int, output: int) -> dict:
    """Anthropic counts the input apart from what was read from or written to its cache."""
    return {"input_tokens": max(prompt - cached - written, 0), "cache_creation_input_tokens": written,
            "cache_read_input_tokens": cached, "output_tokens": output}


def _usage_of(usage: dict | None) -> dict:
    usage = usage or {}
    details = usage.get("prompt_tokens_details") or {}
    return message_usage(prompt=int(usage.get("prompt_tokens") or 0), cached=int(details.get("cached_tokens") or 0),
                         written=int(details.get("cache_write_tokens") or 0),
                         output=int(usage.get("completion_tokens") or 0))


def stop_reason(finish_reason: str) -> str:
    return _STOP_REASONS.get(finish_reason, "end_turn")


def _message(request, *, content: list, stop: str | None, usage: dict, model: str) -> dict:
    return {"model": model or request.model, "id": request.message_id or "msg_nemo", "type": "message",
            "role": "assistant", "content": content, "stop_reason": stop, "stop_sequence": None, "usage": usage}


def message_from_completion(request: MessagesRequest, completion: dict) -> dict:
    choice = (completion.get("choices") or [{}])[0]
    message = choice.get("message") or {}
    content: list[dict] = []
    if thought := reasoning_of(message):
        content.append({"type": "thinking", "thinking": thought,
                        "signature": message.get("reasoning_signature") or UNSIGNED})
    if message.get("content"):
        content.append({"type": "text", "text": message["content"]})
    for call in message.get("tool_calls") or []:
        function = call.get("function") or {}
        content.append({"type": "tool_use", "id": call.get("id") or "", "name": function.get("name") or "",
                        "input": parse_arguments(function.get("arguments"))})
    return _message(request, content=content, stop=stop_reason(choice.get("finish_reason") or ""),
                    usage=_usage_of(completion.get("usage")), model=completion.get("model") or "")


# --- the stream ------------------------------------------------------------------------------------

def _event(kind: str, payload: dict) -> bytes:
    return b"event: " + kind.encode() + b"\ndata: " + orjson.dumps({"type": kind, **payload}) + b"\n\n"


_PING = _event("ping", {})
_STOP = _event("message_stop", {})
# A text delta, the most frequent event, around its index and its text (JSON), written without
# building its payload: the bytes orjson makes of it.
_TEXT_DELTA = (b'event: content_block_delta\ndata: {"type":"content_block_delta","index":%d,'
               b'"delta":{"type":"text_delta","text":%s}}\n\n')
_BLOCK_STOP = b'event: content_block_stop\ndata: {"type":"content_block_stop","index":%d}\n\n'
# The other events every translated stream has, the same way: its start (``_message`` without
# content or usage, around its model and id), a text block's start, and its stop reason and usage.
_MESSAGE_START = (b'event: message_start\ndata: {"type":"message_start","message":{"model":%s,"id":%s,'
                  b'"type":"message","role":"assistant","content":[],"stop_reason":null,"stop_sequence":null,'
                  b'"usage":{"input_tokens":0,"cache_creation_input_tokens":0,"cache_read_input_tokens":0,'
                  b'"output_tokens":0}}}\n\n')
_TEXT_BLOCK = {"type": "text", "text": ""}
_TEXT_BLOCK_START = (b'event: content_block_start\ndata: {"type":"content_block_start","index":%d,'
                     b'"content_block":{"type":"text","text":""}}\n\n')
_MESSAGE_DELTA = (b'event: message_delta\ndata: {"type":"message_delta","delta":{"stop_reason":%s,'
                  b'"stop_sequence":null},"usage":{"input_tokens":%d,"cache_creation_input_tokens":%d,'
                  b'"cache_read_input_tokens":%d,"output_tokens":%d}}\n\n')


def _block_deltas(block: dict) -> tuple[dict, list[dict]]:
    """A whole content block as a stream has it: how it starts, and its deltas."""
    kind = block.get("type")
    if kind == "text":
        return {**block, "text": ""}, [{"type": "text_delta", "text": block.get("text") or ""}]
    if kind == "thinking":
        return {"type": "thinking", "thinking": "", "signature": ""}, [
            {"type": "thinking_delta", "thinking": block.get("thinking") or ""},
            {"type": "signature_delta", "signature": block.get("signature") or ""}]
    if kind == "tool_use":
        return {**block, "input": {}}, [{"type": "input_json_delta",
                                         "partial_json": orjson.dumps(block.get("input") or {}).decode()}]
    # (redacted_thinking, a server tool's use and result: whole in their start.)
    return block, []


def message_events(message: dict) -> bytes:
    """A whole Message as Anthropic streams one: its start, each block's start, deltas and stop
    (a ping after the first start), its stop reason and usage, its stop."""
    usage = message.get("usage") or {}
    start = {**message, "content": [], "stop_reason": None, "stop_sequence": None}
    out = [_event("message_start", {"message": start})]
    for index, block in enumerate(message.get("content") or []):
        opened, deltas = _block_deltas(block)
        out.append(_event("content_block_start", {"index": index, "content_block": opened}))
        if index == 0:
            out.append(_PING)
        out += [_event("content_block_delta", {"index": index, "delta": delta}) for delta in deltas]
        out.append(_event("content_block_stop", {"index": index}))
    out.append(_event("message_delta", {"delta": {"stop_reason": message.get("stop_reason"),
                                                  "stop_sequence": message.get("stop_sequence")}, "usage": usage}))
    out.append(_STOP)
    return b"".join(out)


class MessagesStream:
    """A stream's events for an Anthropic client: a Claude link's own bytes as they came, or the
    chunks of a translated one as Anthropic's events, a content block opened when its first
    piece comes and stopped when the next one starts or the answer ends."""

    __slots__ = ("request", "native", "started", "pinged", "blocks", "open_kind", "calls", "signature")

    def __init__(self, request: MessagesRequest) -> None:
        self.request = request
        self.native = request.native.streamed
        self.started = False
        self.pinged = False
        # How many blocks were opened, what the open one is ("text", "tool_use", None), and the
        # block of each tool call by its chat index.
        self.blocks = 0
        self.open_kind: str | None = None
        self.calls: dict[int, int] = {}
        # The open thinking block's signature, sent as it closes.
        self.signature = ""

    def _start(self, out: list[bytes], model: str) -> None:
        self.started = True
        request = self.request
        out.append(_MESSAGE_START % (orjson.dumps(model or request.model),
                                     orjson.dumps(request.message_id or "msg_nemo")))

    def events(self, batch: list[Event]) -> bytes:
        if self.native:
            return b"".join([encoded for _, encoded in batch if encoded])
        out: list[bytes] = []
        for chunk, _ in batch:
            if not self.started:
                self._start(out, chunk.get("model") or "")
            for choice in chunk.get("choices") or ():
                if choice.get("index", 0) != 0 or not (delta := choice.get("delta")):
                    continue
                if text := delta.get("content"):
                    if self.open_kind != "text":
                        self._open(_TEXT_BLOCK, "text", out)
                    out.append(_TEXT_DELTA % (self.blocks - 1, orjson.dumps(text)))
                elif not delta.get("tool_calls"):
                    self._thinking(delta, out)
                for call in delta.get("tool_calls") or ():
                    self._call(call, out)
        return b"".join(out)

    def _open(self, block: dict, kind: str, out: list[bytes]) -> int:
        self._close(out)
        index = self.blocks
        self.blocks += 1
        self.open_kind = kind
        out.append(_TEXT_BLOCK_START % index if block is _TEXT_BLOCK
                   else _event("content_block_start", {"index": index, "content_block": block}))
        if not self.pinged:
            self.pinged = True
            out.append(_PING)
        return index

    def _close(self, out: list[bytes]) -> None:
        if self.open_kind is None:
            return
        if self.open_kind == "thinking":
            out.append(_event("content_block_delta", {"index": self.blocks - 1, "delta": {
                "type": "signature_delta", "signature": self.signature or UNSIGNED}}))
        self.open_kind = None
        out.append(_BLOCK_STOP % (self.blocks - 1))

    def _thinking(self, delta: dict, out: list[bytes]) -> None:
        thought = reasoning_of(delta)
        if thought and self.open_kind != "thinking":
            self._open({"type": "thinking", "thinking": "", "signature": ""}, "thinking", out)
        if thought:
            out.append(_event("content_block_delta", {"index": self.blocks - 1,
                                                      "delta": {"type": "thinking_delta", "thinking": thought}}))
        if self.open_kind == "thinking" and delta.get("reasoning_signature"):
            self.signature = delta["reasoning_signature"]

    def _call(self, call: dict, out: list[bytes]) -> None:
        position = call.get("index", 0)
        function = call.get("function") or {}
        index = self.calls.get(position)
        if index is None:
            block = {"type": "tool_use", "id": call.get("id") or "", "name": function.get("name") or "", "input": {}}
            index = self.calls[position] = self._open(block, "tool_use", out)
        if piece := function.get("arguments"):
            out.append(_event("content_block_delta", {"index": index,
                                                      "delta": {"type": "input_json_delta", "partial_json": piece}}))

    def end(self, summary: CallSummary) -> bytes:
        if self.native:
            return b""
        out: list[bytes] = []
        if not self.started:
            self._start(out, summary.model)
        self._close(out)
        usage = message_usage(prompt=summary.prompt_tokens, cached=summary.cached_tokens,
                              written=summary.cache_write_tokens, output=summary.completion_tokens)
        out.append(_MESSAGE_DELTA % (orjson.dumps(stop_reason(summary.finish_reason)), usage["input_tokens"],
                                     usage["cache_creation_input_tokens"], usage["cache_read_input_tokens"],
                                     usage["output_tokens"]))
        out.append(_STOP)
        return b"".join(out)

    def failed(self, error: GatewayError) -> bytes:
        return _event("error", {"error": {"type": _ERROR_TYPES.get(error.status, "api_error"),
                                          "message": error.message}})
