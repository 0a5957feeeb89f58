"""A fake OpenAI Chat Completions server, answering in the shape of the recorded traffic."""

from __future__ import annotations

import json
import secrets
import time
from typing import Any

from gateway.providers.shapes import estimate_tokens
from tests.fakes.behaviours import Reply
from tests.fakes.server import Conversation, FakeUpstream, ReceivedRequest, plan_reply, split_text

_ERROR_TYPES = {400: "invalid_request_error", 401: "invalid_request_error", 429: "rate_limit_error"}


class FakeOpenAI(FakeUpstream):
    paths = ("/v1/chat/completions",)

    @property
    def base_url(self) -> str:
        return f"{self.root_url}/v1"

    def provider_options(self, **extra: Any) -> dict:
        return {"base_url": self.base_url, **extra}

    def is_stream(self, request: ReceivedRequest) -> bool:
        return bool(request.json.get("stream"))

    def answer(self, request: ReceivedRequest, reply: Reply, *, stream: bool) -> Any:
        body = request.json
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
