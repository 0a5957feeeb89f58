"""A fake OpenAI server: Chat Completions in the shape of the recorded traffic, and Embeddings
(``/v1/embeddings``) in the shape of OpenAI's API reference: float or base64 vectors. Made a
server that thinks (``reasoning_field``), it answers with its thinking first as DeepSeek
(``reasoning_content``) or vLLM (``reasoning``) do, and refuses a request that sends thinking back."""

from __future__ import annotations

import base64
import json
import secrets
import struct
import time
from typing import Any

from gateway.providers.shapes import estimate_tokens
from tests.fakes.behaviours import Reply, Status
from tests.fakes.server import Conversation, FakeUpstream, ReceivedRequest, fake_vector, plan_reply, split_text

_ERROR_TYPES = {400: "invalid_request_error", 401: "invalid_request_error", 429: "rate_limit_error"}


class FakeOpenAI(FakeUpstream):
    paths = ("/v1/chat/completions", "/v1/embeddings")

    def __init__(self, *, reasoning_field: str | None = None) -> None:
        super().__init__()
        self.reasoning_field = reasoning_field

    def refusal(self, request: ReceivedRequest) -> Status | None:
        sent_back = [name for message in request.json.get("messages") or [] for name in message
                     if name in ("reasoning_content", "reasoning", "reasoning_signature")]
        if self.reasoning_field and sent_back:
            return Status(400, message=f"{sent_back[0]} is not accepted in the input messages")
        return None

    @property
    def base_url(self) -> str:
        return f"{self.root_url}/v1"

    def provider_options(self, **extra: Any) -> dict:
        return {"base_url": self.base_url, **extra}

    def is_stream(self, request: ReceivedRequest) -> bool:
        return bool(request.json.get("stream"))

    def answer(self, request: ReceivedRequest, reply: Reply, *, stream: bool) -> Any:
        body = request.json
        if request.path.endswith("/embeddings"):
            return _embeddings(body)
        plan = plan_reply(reply, _conversation(body))
        completion_id = "chatcmpl-" + secrets.token_hex(12)
        created = int(time.time())
        model = body.get("model", "gpt-4o")
        tool_calls = [
            {
                "id": "call_" + secrets.token_hex(12),
                "type": "function",
                "function": {"name": name, "arguments": json.dumps(arguments)},
            }
            for name, arguments in plan.tool_calls
        ]
        finish_reason = "tool_calls" if tool_calls else "stop"
        usage = _usage(prompt=len(request.body), completion=plan.text + json.dumps(plan.tool_calls))
        if not stream:
            message = {"role": "assistant", "content": plan.text or None, "refusal": None, "annotations": []}
            if self.reasoning_field:
                message[self.reasoning_field] = _thought(body)
            if tool_calls:
                message["tool_calls"] = tool_calls
            return {
                "id": completion_id,
                "object": "chat.completion",
                "created": created,
                "model": model,
                "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": finish_reason}],
                "usage": usage,
            }

        def chunk(choices: list[dict], usage: dict | None = None) -> bytes:
            return _event(
                {
                    "id": completion_id,
                    "object": "chat.completion.chunk",
                    "created": created,
                    "model": model,
                    "choices": choices,
                    "usage": usage,
                }
            )

        def delta(delta: dict, finish_reason: str | None = None) -> bytes:
            return chunk([{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}])

        events = [delta({"role": "assistant", "content": "" if plan.text else None, "refusal": None})]
        if self.reasoning_field:
            events += [delta({"content": None, self.reasoning_field: piece}) for piece in split_text(_thought(body))]
        if plan.text:
            events += [delta({"content": piece}) for piece in split_text(plan.text)]
        for index, call in enumerate(tool_calls):
            head = {**call, "index": index, "function": {"name": call["function"]["name"], "arguments": ""}}
            events.append(delta({"tool_calls": [head]}))
            events += [
                delta({"tool_calls": [{"index": index, "function": {"arguments": piece}}]})
                for piece in split_text(call["function"]["arguments"])
            ]
        events.append(delta({}, finish_reason))
        if (body.get("stream_options") or {}).get("include_usage"):
            events.append(chunk([], usage))
        return [*events, b"data: [DONE]\n\n"]

    def error_body(self, status: int, message: str, *, stream: bool) -> Any:
        error_type = _ERROR_TYPES.get(status, "server_error" if status >= 500 else "invalid_request_error")
        return {"error": {"message": message, "type": error_type, "param": None, "code": None}}

    def error_event(self, status: int, message: str) -> bytes:
        return _event(self.error_body(status, message, stream=True))


def _thought(body: dict) -> str:
    return f"Thinking over {len(body.get('messages') or [])} messages"


_EMBEDDING_DIMENSIONS = {"text-embedding-3-small": 1536, "text-embedding-3-large": 3072}


def _embeddings(body: dict) -> dict:
    inputs = body["input"] if isinstance(body["input"], list) and isinstance(body["input"][0], str | list) \
        else [body["input"]]
    dimensions = body.get("dimensions") or _EMBEDDING_DIMENSIONS.get(body["model"], 1536)
    data = []
    for index, item in enumerate(inputs):
        vector = fake_vector(json.dumps(item) if isinstance(item, list) else item, dimensions)
        if body.get("encoding_format") == "base64":
            vector = base64.b64encode(struct.pack(f"<{dimensions}f", *vector)).decode()
        data.append({"object": "embedding", "index": index, "embedding": vector})
    tokens = sum(len(item) if isinstance(item, list) else estimate_tokens(item) for item in inputs)
    return {"object": "list", "data": data, "model": body["model"],
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}


def _conversation(body: dict) -> Conversation:
    messages = body.get("messages") or []
    tools = [] if body.get("tool_choice") == "none" else body.get("tools") or []
    results = []
    for message in reversed(messages):
        if message.get("role") != "tool":
            break
        results.insert(0, _text(message.get("content")))
    return Conversation(
        tools=[(tool["function"]["name"], tool["function"].get("parameters") or {}) for tool in tools],
        tool_results=results,
        last_text=_text(messages[-1].get("content")) if messages else "",
    )


def _text(content: Any) -> str:
    if isinstance(content, list):
        return "".join(part.get("text", "") for part in content)
    return content or ""


def _usage(*, prompt: int, completion: str) -> dict:
    prompt_tokens = prompt // 4
    completion_tokens = estimate_tokens(completion)
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
        "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0},
    }


def _event(data: dict) -> bytes:
    return b"data: " + json.dumps(data).encode() + b"\n\n"
