"""A fake Claude-on-Vertex endpoint (rawPredict / streamRawPredict, and count-tokens), answering
in the shape of the recorded traffic: ``input_json_delta`` fragments, ``data:`` lines padded with
spaces. Asked to think, it thinks first in a ``thinking`` block whose ``signature`` it checks when
the block comes back (streamed as ``thinking_delta``s and a ``signature_delta``), as Claude does."""

from __future__ import annotations

import json
import secrets
from typing import Any

from gateway.providers.shapes import estimate_tokens
from tests.fakes.behaviours import Reply, Status
from tests.fakes.server import Conversation, FakeUpstream, ReceivedRequest, plan_reply, split_text

_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    503: "overloaded_error",
    529: "overloaded_error",
}


class FakeAnthropic(FakeUpstream):
    paths = ("/v1/projects/{project}/locations/{location}/publishers/anthropic/models/{model_and_method}",)

    def provider_options(self, **extra: Any) -> dict:
        return {"base_url": self.base_url, "project": "fake-project", "location": "us-east5", **extra}

    def __init__(self) -> None:
        super().__init__()
        self.signatures: set[str] = set()
        self.cached_prefixes: set[str] = set()

    def _cache_usage(self, body: dict) -> tuple[int, int]:
        """The prompt's tokens (read, written) of its prompt cache: the prefix up to its last block
        marked ``cache_control`` is written the first time and read after that."""
        system = body.get("system")
        pieces = [block for block in system if isinstance(block, dict)] if isinstance(system, list) else []
        pieces += [block for message in body.get("messages") or [] for block in _blocks(message)]
        marked = [index for index, block in enumerate(pieces) if block.get("cache_control")]
        if not marked:
            return 0, 0
        prefix = json.dumps(pieces[: marked[-1] + 1])
        tokens = len(prefix) // 4
        if prefix in self.cached_prefixes:
            return tokens, 0
        self.cached_prefixes.add(prefix)
        return 0, tokens

    def is_stream(self, request: ReceivedRequest) -> bool:
        return request.path.endswith(":streamRawPredict")

    @staticmethod
    def is_count(request: ReceivedRequest) -> bool:
        return request.path.endswith("/count-tokens:rawPredict")

    def refusal(self, request: ReceivedRequest) -> Status | None:
        """What Claude on Vertex refuses that a translation could get wrong."""
        body = request.json
        if self.is_count(request):
            if not body.get("model") or body.get("anthropic_version") != "vertex-2023-10-16":
                return Status(400, message="count-tokens needs the model and anthropic_version")
            return None
        if "model" in body:
            return Status(400, message="model: Extra inputs are not permitted")
        if body.get("anthropic_version") != "vertex-2023-10-16" or not body.get("max_tokens"):
            return Status(400, message="anthropic_version and max_tokens are required")
        messages = body.get("messages") or []
        if thinking := _thinking_refusal(body, messages):
            return Status(400, message=thinking)
        if forged := self._forged_signature(messages):
            return Status(400, message=forged)
        for position, message in enumerate(messages):
            calls = {block["id"] for block in _blocks(message) if block.get("type") == "tool_use"}
            following = _blocks(messages[position + 1]) if position + 1 < len(messages) else []
            answered = {block["tool_use_id"] for block in following if block.get("type") == "tool_result"}
            if calls - answered:
                missing = ", ".join(sorted(calls - answered))
                return Status(
                    400, message=f"tool_use ids were found without tool_result blocks immediately after: {missing}"
                )
        return None

    def _forged_signature(self, messages: list[dict]) -> str | None:
        for position, message in enumerate(messages):
            for block in _blocks(message) if message.get("role") == "assistant" else []:
                if block.get("type") == "thinking" and block.get("signature") not in self.signatures:
                    return f"messages.{position}.content: Invalid `signature` in `thinking` block"
        return None

    def _thinking_block(self, body: dict) -> list[dict]:
        """Claude thinks at the start of a turn (after a tool result only with interleaved thinking)."""
        if (body.get("thinking") or {}).get("type") != "enabled":
            return []
        last = _blocks((body.get("messages") or [{}])[-1])
        if last and all(block.get("type") == "tool_result" for block in last):
            return []
        signature = secrets.token_urlsafe(48)
        self.signatures.add(signature)
        return [{"type": "thinking", "thinking": "Let me think about what is asked.", "signature": signature}]

    def answer(self, request: ReceivedRequest, reply: Reply, *, stream: bool) -> Any:
        if self.is_count(request):
            return {"input_tokens": len(json.dumps(request.json.get("messages"))) // 4 + 3}
        plan = plan_reply(reply, _conversation(request.json))
        model = request.path.rsplit("/", 1)[-1].split(":")[0].replace("@", "-")
        blocks: list[dict] = self._thinking_block(request.json)
        blocks += [{"type": "text", "text": plan.text}] if plan.text else []
        blocks += [
            {"type": "tool_use", "id": "toolu_vrtx_" + secrets.token_hex(12), "name": name, "input": arguments}
            for name, arguments in plan.tool_calls
        ]
        stop_reason = "tool_use" if plan.tool_calls else "end_turn"
        read, written = self._cache_usage(request.json)
        usage = {
            "input_tokens": len(request.body) // 4 - read - written,
            "cache_creation_input_tokens": written,
            "cache_read_input_tokens": read,
            "output_tokens": estimate_tokens(plan.text + json.dumps(plan.tool_calls)),
        }
        message = {
            "model": model,
            "id": "msg_vrtx_" + secrets.token_hex(12),
            "type": "message",
            "role": "assistant",
            "content": blocks,
            "stop_reason": stop_reason,
            "stop_sequence": None,
            "usage": usage,
        }
        if not stream:
            return message
        start = {**message, "content": [], "stop_reason": None, "usage": {**usage, "output_tokens": 1}}
        events = [_event({"type": "message_start", "message": start}), _event({"type": "ping"})]
        for index, block in enumerate(blocks):
            if block["type"] == "text":
                opening = {"type": "text", "text": ""}
                deltas = [{"type": "text_delta", "text": piece} for piece in split_text(block["text"])]
            elif block["type"] == "thinking":
                opening = {"type": "thinking", "thinking": "", "signature": ""}
                deltas = [{"type": "thinking_delta", "thinking": piece} for piece in split_text(block["thinking"])]
                deltas.append({"type": "signature_delta", "signature": block["signature"]})
            else:
                opening = {**block, "input": {}}
                # Like Claude: an empty fragment first, then the JSON in pieces.
                fragments = ["", *split_text(json.dumps(block["input"]))]
                deltas = [{"type": "input_json_delta", "partial_json": fragment} for fragment in fragments]
            events.append(_event({"type": "content_block_start", "index": index, "content_block": opening}))
            events += [_event({"type": "content_block_delta", "index": index, "delta": delta}) for delta in deltas]
            events.append(_event({"type": "content_block_stop", "index": index}))
        events.append(
            _event(
                {
                    "type": "message_delta",
                    "delta": {"stop_reason": stop_reason, "stop_sequence": None},
                    "usage": {"output_tokens": usage["output_tokens"]},
                }
            )
        )
        events.append(_event({"type": "message_stop"}))
        return events

    def error_body(self, status: int, message: str, *, stream: bool) -> Any:
        return {"type": "error", "error": {"type": _ERROR_TYPES.get(status, "api_error"), "message": message}}

    def error_event(self, status: int, message: str) -> bytes:
        return _event(self.error_body(status, message, stream=True))


def _blocks(message: dict) -> list[dict]:
    content = message.get("content")
    return [{"type": "text", "text": content}] if isinstance(content, str) else content or []


def _conversation(body: dict) -> Conversation:
    messages = body.get("messages") or []
    tools = [] if (body.get("tool_choice") or {}).get("type") == "none" else body.get("tools") or []
    last_blocks = _blocks(messages[-1]) if messages else []
    results = [block for block in last_blocks if block.get("type") == "tool_result"]
    return Conversation(
        tools=[(tool["name"], tool.get("input_schema") or {}) for tool in tools],
        tool_results=["".join(part.get("text", "") for part in _blocks(result)) for result in results],
        last_text="".join(block.get("text", "") for block in last_blocks if block.get("type") == "text"),
    )


def _event(data: dict) -> bytes:
    # Claude on Vertex pads its data lines with a varying run of spaces.
    padding = " " * (len(data) * 3 % 11)
    return f"event: {data['type']}\ndata: {json.dumps(data)}{padding}\n\n".encode()


def _thinking_refusal(body: dict, messages: list[dict]) -> str | None:
    """What Claude refuses of a call that thinks (Anthropic's extended thinking rules)."""
    thinking = body.get("thinking")
    if not thinking or thinking.get("type") != "enabled":
        return None
    budget = thinking.get("budget_tokens") or 0
    if budget < 1024:
        return "thinking.budget_tokens: Input should be greater than or equal to 1024"
    if body["max_tokens"] <= budget:
        return "`max_tokens` must be greater than `thinking.budget_tokens`"
    if body.get("temperature") not in (None, 1) or body.get("top_k") is not None:
        return "`temperature` may only be set to 1 when thinking is enabled"
    if (body.get("tool_choice") or {}).get("type") in ("any", "tool"):
        return "Thinking may not be enabled when tool_choice forces tool use."
    last_assistant = next((m for m in reversed(messages) if m.get("role") == "assistant"), None)
    if last_assistant is not None and messages[-1] is not last_assistant:
        blocks = _blocks(last_assistant)
        if any(b.get("type") == "tool_use" for b in blocks) and blocks[0].get("type") not in (
            "thinking", "redacted_thinking"
        ):
            return ("messages.1.content.0.type: Expected `thinking` or `redacted_thinking`, but found `tool_use`. "
                    "When `thinking` is enabled, a final `assistant` message must start with a thinking block.")
    return None
