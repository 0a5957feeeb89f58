"""Claude on Vertex AI: the Anthropic Messages API behind ``rawPredict`` / ``streamRawPredict``."""

from __future__ import annotations

import json
import re
from typing import Any

import orjson

from gateway.providers.base import StreamDecoder, UpstreamError, UpstreamRequest, classify_status
from gateway.providers.fields import (
    claude_thinking,
    reasoning_effort,
    refuse,
    refuse_beside_thinking,
    refuse_uncarried,
)
from gateway.providers.shapes import (
    ChunkMaker,
    append_turn,
    arguments_json,
    choice,
    completion,
    image_url,
    load_upstream_json,
    max_output_tokens,
    message_texts,
    new_completion_id,
    parse_arguments,
    parse_data_uri,
    request_functions,
    stop_sequences,
    tool_call,
    untranslatable,
    usage,
)
from gateway.providers.sse import JSONEventDecoder
from gateway.providers.thinking import THINKING_BUDGET, without_gateway_thinking
from gateway.providers.vertex import VertexProvider, json_or_none

ANTHROPIC_VERSION = "vertex-2023-10-16"
# Claude requires max_tokens; OpenAI clients usually leave it out.
DEFAULT_MAX_TOKENS = 4096
# OpenAI's temperature goes up to 2, Claude's to 1.
MAX_TEMPERATURE = 1.0
_STOP_REASONS = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "pause_turn": "stop",
    "max_tokens": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}
# The HTTP status each error type stands for, for errors sent inside a stream.
_ERROR_STATUS = {
    "invalid_request_error": 400,
    "authentication_error": 401,
    "permission_error": 403,
    "not_found_error": 404,
    "request_too_large": 413,
    "rate_limit_error": 429,
    "api_error": 500,
    "overloaded_error": 529,
}
# What translate_request carries to Claude; any other field that asks for something is refused
# (gateway/providers/fields.py): Claude has no n, seed, penalties, logit_bias, logprobs.
CARRIED = frozenset({
    "messages", "tools", "tool_choice", "parallel_tool_calls", "max_tokens", "max_completion_tokens",
    "temperature", "top_p", "top_k", "stop", "reasoning_effort", "user", "response_format",
    # (Claude thinks as reasoning_effort says; its thinking is not shown to an OpenAI client.)
    THINKING_BUDGET,
})
# Claude answers in JSON by calling a tool whose input schema is the format's: the call comes
# back to the client as the answer's text, never as a tool call.
ANSWER_TOOL = "json_answer"
# Claude accepts only these characters in tool_use ids; other wire formats mint freer ones.
_NOT_IN_TOOL_USE_ID = re.compile(r"[^A-Za-z0-9_-]")


class VertexAnthropicProvider(VertexProvider):
    publisher = "anthropic"
    # An Anthropic Messages call (POST /v1/messages) goes upstream as it came.
    native_wire = "anthropic"

    async def prepare(self, *, body: dict, model: str, stream: bool, output_cap: int | None = None) -> UpstreamRequest:
        payload = translate_request(body, output_cap=output_cap, model=model)
        if stream:
            payload["stream"] = True
        return UpstreamRequest(
            url=self.model_url(model, "streamRawPredict" if stream else "rawPredict"),
            headers=await self.auth_headers(),
            body=json.dumps(payload).encode(),
        )

    def parse_response(self, *, body: bytes, model: str) -> dict:
        data = load_upstream_json(body)
        if data.get("type") == "error":
            raise anthropic_error(data.get("error") or {})
        return translate_response(data, model=model)

    def stream_decoder(self, *, model: str, body: dict) -> StreamDecoder:
        return AnthropicStreamDecoder(model=model)

    # --- the Messages API as it came ---------------------------------------------------------------
    async def prepare_native(self, *, native, model: str, stream: bool) -> UpstreamRequest:
        """The client's body with Vertex's ``anthropic_version`` for its ``model`` (the link's
        model is in the URL) and its ``anthropic-beta`` header: nothing else changes but the
        thinking blocks another model's link made, whose signatures Claude would refuse."""
        payload = _for_claude({name: value for name, value in native.body.items() if name != "model"})
        if _thinking_cannot_go_on(payload):
            del payload["thinking"]
        payload["anthropic_version"] = ANTHROPIC_VERSION
        if stream:
            payload["stream"] = True
        else:
            payload.pop("stream", None)
        return UpstreamRequest(url=self.model_url(model, "streamRawPredict" if stream else "rawPredict"),
                               headers={**await self.auth_headers(), **native.headers}, body=orjson.dumps(payload))

    def native_stream_decoder(self, *, model: str, native) -> StreamDecoder:
        return NativeStreamDecoder(model=model, native=native)

    async def count_tokens(self, session, *, body: dict, native, model: str, timeout_s: float) -> dict:
        """Vertex's own count for Claude (``count-tokens:rawPredict``), which names the model in the body."""
        raw = await self._exchange(session, self._prepare_count(native, model), timeout_s)
        data = load_upstream_json(raw)
        if not isinstance(data, dict) or not isinstance(data.get("input_tokens"), int):
            raise UpstreamError("server", "count-tokens answered without input_tokens")
        return {"input_tokens": data["input_tokens"]}

    async def _prepare_count(self, native, model: str) -> UpstreamRequest:
        payload = {**_for_claude(native.body), "model": model, "anthropic_version": ANTHROPIC_VERSION}
        return UpstreamRequest(url=self.model_url("count-tokens", "rawPredict"),
                               headers={**await self.auth_headers(), **native.headers}, body=orjson.dumps(payload))

    def classify_error(self, *, status: int, headers: Any, body: bytes) -> UpstreamError:
        # Claude's own errors have Anthropic's shape; Vertex's front door answers in Google's.
        data = json_or_none(body)
        if isinstance(data, dict) and data.get("type") == "error":
            return anthropic_error(data.get("error") or {}, status=status, headers=headers)
        return super().classify_error(status=status, headers=headers, body=body)


def _for_claude(payload: dict) -> dict:
    """An Anthropic body without the thinking blocks the gateway signed (a Gemini step's): Claude
    takes back only its own signatures. A step whose turn then starts without thinking goes on
    without it (``_thinking_cannot_go_on``)."""
    if isinstance(payload.get("messages"), list):
        return {**payload, "messages": without_gateway_thinking(payload["messages"])}
    return payload


def _thinking_cannot_go_on(payload: dict) -> bool:
    """A tool loop's step whose last tool calls another model made (a fallback served them): the
    assistant turn has no thinking block to start with, which Claude wants back while it thinks.
    So the step goes without thinking, as Anthropic says to do without them (and as a step of an
    OpenAI client's loop does, ``_thinking``)."""
    if (payload.get("thinking") or {}).get("type") != "enabled":
        return False
    messages = payload.get("messages") or []
    if len(messages) < 2 or messages[-2].get("role") != "assistant":
        return False
    last, turn = messages[-1].get("content"), messages[-2].get("content")
    if not isinstance(last, list) or not isinstance(turn, list) or not turn:
        return False
    answers_tools = any(isinstance(block, dict) and block.get("type") == "tool_result" for block in last)
    first = turn[0].get("type") if isinstance(turn[0], dict) else None
    return answers_tools and first not in ("thinking", "redacted_thinking")


def anthropic_error(error: dict, *, status: int | None = None, headers: Any = None) -> UpstreamError:
    kind = error.get("type", "api_error")
    return classify_status(status or _ERROR_STATUS.get(kind, 500), headers, f"{kind}: {error.get('message', '')}")


# --- OpenAI request -> Messages request ------------------------------------------------------


def translate_request(body: dict, *, output_cap: int | None = None, model: str = "") -> dict:
    """``model``: the link's model id, which says whether the model thinks (``reasoning_effort``)."""
    refuse_uncarried(body, wire="Claude", carried=CARRIED)
    system, messages = _messages(body.get("messages") or [])
    payload: dict[str, Any] = {
        "anthropic_version": ANTHROPIC_VERSION,
        "max_tokens": max_output_tokens(body) or min(output_cap or DEFAULT_MAX_TOKENS, DEFAULT_MAX_TOKENS),
        "messages": messages,
    }
    if system:
        payload["system"] = system
    if (effort := reasoning_effort(body)) and (thinking := _thinking(body, effort, model, messages, output_cap)):
        payload["thinking"], payload["max_tokens"] = thinking
    if body.get("temperature") is not None:
        payload["temperature"] = min(body["temperature"], MAX_TEMPERATURE)
    if body.get("top_p") is not None:
        payload["top_p"] = body["top_p"]
    if body.get("top_k") is not None:
        payload["top_k"] = body["top_k"]
    if isinstance(body.get("user"), str) and body["user"]:
        payload["metadata"] = {"user_id": body["user"]}
    if stop := stop_sequences(body):
        payload["stop_sequences"] = stop
    functions = request_functions(body)
    parallel = body.get("parallel_tool_calls") is not False
    if answer_tool := _answer_tool(body, functions, thinking="thinking" in payload):
        _answer_in_json(payload, answer_tool, functions, body.get("tool_choice"), parallel=parallel)
    elif functions:
        payload["tools"] = [_tool(function) for function in functions]
        payload["tool_choice"] = _tool_choice(body.get("tool_choice"), parallel=parallel)
    return payload


def _answer_tool(body: dict, functions: list[dict], *, thinking: bool) -> dict | None:
    """The tool Claude answers a ``response_format`` of JSON with, or None for text."""
    response_format = body.get("response_format") or {}
    kind = response_format.get("type")
    if kind not in ("json_object", "json_schema"):
        return None
    if thinking:
        raise refuse("response_format", "Claude answers in JSON by a forced tool call, which it cannot make "
                                        "while it thinks (reasoning_effort)")
    if any(function["name"] == ANSWER_TOOL for function in functions):
        raise refuse("tools", f"the tool name {ANSWER_TOOL!r} is how Claude answers in JSON here")
    schema = (response_format.get("json_schema") or {}).get("schema") if kind == "json_schema" else None
    return {"name": ANSWER_TOOL, "description": "Give the answer, in this JSON shape.",
            "input_schema": schema or {"type": "object"}}


def _answer_in_json(payload: dict, answer_tool: dict, functions: list[dict], tool_choice, *, parallel: bool) -> None:
    if isinstance(tool_choice, dict):
        # The function the client named must be called: the answer comes after its result.
        payload["tools"] = [_tool(function) for function in functions]
        payload["tool_choice"] = _tool_choice(tool_choice, parallel=parallel)
        return
    offered = [] if tool_choice == "none" else [_tool(function) for function in functions]
    payload["tools"] = [*offered, answer_tool]
    # A tool must be called: one of the client's, or the answer.
    forced = {"type": "any"} if offered else {"type": "tool", "name": ANSWER_TOOL}
    payload["tool_choice"] = {**forced, "disable_parallel_tool_use": not parallel}


def _thinking(body: dict, effort: str, model: str, turns: list[dict], output_cap: int | None):
    thinking = claude_thinking(effort, model=model, client_max_tokens=max_output_tokens(body),
                               default_max_tokens=DEFAULT_MAX_TOKENS, output_cap=output_cap)
    if thinking is None:
        return None
    refuse_beside_thinking(body)
    # A tool loop's next step: Claude thinks in a turn only from its start and, while it thinks,
    # wants that turn's thinking blocks back (with their signatures), which OpenAI clients do
    # not keep. So the step goes without thinking, as Anthropic says to do without them: the
    # turn's thinking was done on its first step.
    if turns and turns[-1]["role"] == "user" and all(
        block.get("type") == "tool_result" for block in turns[-1]["content"]
    ):
        return None
    return thinking


def _messages(messages: list[dict]) -> tuple[list[dict], list[dict]]:
    system: list[dict] = []
    turns: list[dict] = []
    for message in messages:
        role = message.get("role")
        content = message.get("content")
        if role in ("system", "developer"):
            system += _text_blocks(message_texts(content))
        elif role == "user":
            append_turn(turns, "user", _user_blocks(content), key="content")
        elif role == "assistant":
            blocks = _text_blocks(message_texts(content))
            for call in message.get("tool_calls") or []:
                function = call["function"]
                blocks.append(
                    {
                        "type": "tool_use",
                        "id": _tool_use_id(call.get("id", "")),
                        "name": function["name"],
                        "input": parse_arguments(function.get("arguments")),
                    }
                )
            append_turn(turns, "assistant", blocks, key="content")
        elif role == "tool":
            result: dict[str, Any] = {
                "type": "tool_result",
                "tool_use_id": _tool_use_id(message.get("tool_call_id", "")),
            }
            if blocks := _text_blocks(message_texts(content)):
                result["content"] = blocks
            append_turn(turns, "user", [result], key="content")
        else:
            raise untranslatable(f"unsupported message role {role!r}")
    return system, turns


def _text_blocks(texts: list[str]) -> list[dict]:
    # Claude rejects blank text blocks, which OpenAI clients do send (e.g. content "" beside tool calls).
    return [{"type": "text", "text": text} for text in texts if text.strip()]


def _user_blocks(content: str | list | None) -> list[dict]:
    if content is None or isinstance(content, str):
        return _text_blocks(message_texts(content))
    return [block for part in content if (block := _user_block(part))]


def _user_block(part: dict) -> dict | None:
    kind = part.get("type")
    if kind == "text":
        return {"type": "text", "text": part["text"]} if part["text"].strip() else None
    if kind == "image_url":
        url = image_url(part)
        if inline := parse_data_uri(url):
            return {"type": "image", "source": {"type": "base64", "media_type": inline[0], "data": inline[1]}}
        return {"type": "image", "source": {"type": "url", "url": url}}
    if kind == "file" and (inline := parse_data_uri(part["file"].get("file_data", ""))):
        return {"type": "document", "source": {"type": "base64", "media_type": inline[0], "data": inline[1]}}
    raise untranslatable(f"unsupported content part {kind!r}")


def _tool_use_id(call_id: str) -> str:
    return _NOT_IN_TOOL_USE_ID.sub("_", call_id)


def _tool(function: dict) -> dict:
    tool = {
        "name": function["name"],
        "input_schema": function.get("parameters") or {"type": "object", "properties": {}},
    }
    if function.get("description"):
        tool["description"] = function["description"]
    return tool


def _tool_choice(tool_choice: str | dict | None, *, parallel: bool) -> dict:
    if tool_choice == "none":
        return {"type": "none"}
    if tool_choice == "required":
        kind: dict[str, Any] = {"type": "any"}
    elif isinstance(tool_choice, dict):
        kind = {"type": "tool", "name": tool_choice["function"]["name"]}
    else:
        kind = {"type": "auto"}
    return {**kind, "disable_parallel_tool_use": not parallel}


# --- Messages answer -> OpenAI answer ---------------------------------------------------------


def translate_response(data: dict, *, model: str) -> dict:
    texts: list[str] = []
    tool_calls: list[dict] = []
    for block in data.get("content") or []:
        if block.get("type") == "text":
            texts.append(block["text"])
        elif block.get("type") == "tool_use" and block.get("name") == ANSWER_TOOL:
            texts.append(arguments_json(block.get("input") or {}))
        elif block.get("type") == "tool_use":
            # Claude's own id is kept: it is what the next turn's tool_result must name.
            arguments = arguments_json(block.get("input") or {})
            tool_calls.append(tool_call(id=block["id"], name=block["name"], arguments=arguments))
    finish_reason = _finish_reason(data.get("stop_reason"), called_tools=bool(tool_calls))
    return completion(
        id=_completion_id(data),
        model=data.get("model") or model,
        choices=[choice(index=0, text="".join(texts), tool_calls=tool_calls, finish_reason=finish_reason)],
        usage=_usage(data.get("usage") or {}),
    )


def _finish_reason(stop_reason: str | None, *, called_tools: bool) -> str:
    # A JSON answer given by the answer tool is an answer, not a tool call.
    if stop_reason == "tool_use" and not called_tools:
        return "stop"
    return _STOP_REASONS.get(stop_reason or "", "stop")


def _completion_id(message: dict) -> str:
    return f"chatcmpl-{message['id']}" if message.get("id") else new_completion_id()


def _usage(anthropic_usage: dict) -> dict:
    # input_tokens excludes the cached part; OpenAI's prompt_tokens includes it.
    cache_read = anthropic_usage.get("cache_read_input_tokens") or 0
    cache_write = anthropic_usage.get("cache_creation_input_tokens") or 0
    return usage(
        prompt_tokens=(anthropic_usage.get("input_tokens") or 0) + cache_read + cache_write,
        completion_tokens=anthropic_usage.get("output_tokens") or 0,
        cached_tokens=cache_read,
        cache_write_tokens=cache_write,
    )


class AnthropicStreamDecoder(JSONEventDecoder):
    unfinished = "stream ended before message_stop"

    def __init__(self, *, model: str) -> None:
        super().__init__()
        self.model = model
        self._chunks = ChunkMaker(id=new_completion_id(), model=model)
        self._usage: dict[str, int] = {}
        self._tool_call_index: dict[int, int] = {}
        # The blocks of the answer tool, whose input is streamed as the answer's text.
        self._answer_blocks: set[int] = set()
        self._stop_reason: str | None = None

    def _translate(self, data: dict) -> list[dict]:
        kind = data.get("type")
        if kind == "error":
            raise anthropic_error(data.get("error") or {})
        if kind == "message_start":
            message = data.get("message") or {}
            self._chunks = ChunkMaker(id=_completion_id(message), model=message.get("model") or self.model)
            self._count(message.get("usage"))
            return [self._chunks.role()]
        if kind == "content_block_start":
            return self._block_start(data["index"], data.get("content_block") or {})
        if kind == "content_block_delta":
            return self._block_delta(data["index"], data.get("delta") or {})
        if kind == "message_delta":
            self._stop_reason = (data.get("delta") or {}).get("stop_reason") or self._stop_reason
            self._count(data.get("usage"))
            return []
        if kind == "message_stop":
            self._finished = True
            finish_reason = _finish_reason(self._stop_reason, called_tools=bool(self._tool_call_index))
            return [self._chunks.finish(finish_reason), self._chunks.usage(_usage(self._usage))]
        # ping, content_block_stop: nothing for the client.
        return []

    def _count(self, counts: dict | None) -> None:
        # message_delta repeats the counts so far; a missing or null count changes nothing.
        self._usage.update({name: value for name, value in (counts or {}).items() if isinstance(value, int)})

    def _block_start(self, block_index: int, block: dict) -> list[dict]:
        if block.get("type") == "tool_use" and block.get("name") == ANSWER_TOOL:
            self._answer_blocks.add(block_index)
            return []
        if block.get("type") == "tool_use":
            call_index = len(self._tool_call_index)
            self._tool_call_index[block_index] = call_index
            call = {"index": call_index, **tool_call(id=block["id"], name=block["name"], arguments="")}
            return [self._chunks.delta({"tool_calls": [call]})]
        if block.get("type") == "text" and block.get("text"):
            return [self._chunks.delta({"content": block["text"]})]
        return []

    def _block_delta(self, block_index: int, delta: dict) -> list[dict]:
        if delta.get("type") == "text_delta" and delta.get("text"):
            return [self._chunks.delta({"content": delta["text"]})]
        if delta.get("type") == "input_json_delta" and delta.get("partial_json") and block_index in self._answer_blocks:
            return [self._chunks.delta({"content": delta["partial_json"]})]
        if delta.get("type") == "input_json_delta" and delta.get("partial_json"):
            fragment = {"index": self._tool_call_index[block_index], "function": {"arguments": delta["partial_json"]}}
            return [self._chunks.delta({"tool_calls": [fragment]})]
        # thinking and signature deltas are not part of the OpenAI answer.
        return []


class NativeStreamDecoder(AnthropicStreamDecoder):
    """Claude's stream for an Anthropic client: what each read brought goes on as it came (the
    first event of its batch, with no chunk), and its chunks feed the call's summary. The Message
    the stream was is put together as it goes, and kept as the call's ``native.answer`` once it
    stops (what the response cache keeps: thinking blocks and their signatures included)."""

    def __init__(self, *, model: str, native) -> None:
        super().__init__(model=model)
        self._native = native
        self._message: MessageBuilder | None = MessageBuilder()

    def feed_events(self, data: bytes) -> list:
        return [({}, data), *[(chunk, None) for chunk in self.feed(data)]]

    def _translate(self, data: dict) -> list[dict]:
        chunks = super()._translate(data)
        if self._message is not None:
            try:
                self._message.take(data)
            except (KeyError, IndexError, TypeError, AttributeError, ValueError):
                # A stream not shaped as Anthropic documents: relayed all the same, not kept.
                self._message = None
        if self._finished and self._message is not None and self._message.message is not None:
            self._native.answer = orjson.dumps(self._message.message)
        return chunks


class MessageBuilder:
    """A Message put together from its stream's events, as the Anthropic SDK accumulates one."""

    def __init__(self) -> None:
        self.message: dict | None = None
        self._partial_json: dict[int, str] = {}

    def take(self, data: dict) -> None:
        kind = data["type"]
        if kind == "message_start":
            self.message = {**data["message"], "content": []}
            return
        message = self.message
        if kind == "content_block_start":
            message["content"].append(dict(data["content_block"]))
        elif kind == "content_block_delta":
            self._delta(message["content"][data["index"]], data["index"], data["delta"])
        elif kind == "content_block_stop" and data["index"] in self._partial_json:
            message["content"][data["index"]]["input"] = json.loads(self._partial_json.pop(data["index"]) or "{}")
        elif kind == "message_delta":
            message.update(data.get("delta") or {})
            message["usage"] = {**(message.get("usage") or {}), **(data.get("usage") or {})}

    def _delta(self, block: dict, index: int, delta: dict) -> None:
        kind = delta["type"]
        if kind == "input_json_delta":
            self._partial_json[index] = self._partial_json.get(index, "") + delta["partial_json"]
        elif kind == "citations_delta":
            block.setdefault("citations", []).append(delta["citation"])
        else:
            # text_delta, thinking_delta, signature_delta: appended to the field they name.
            name = kind.removesuffix("_delta")
            block[name] = (block.get(name) or "") + delta[name]
