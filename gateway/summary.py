"""What a call produced, gathered from a completion or from the chunks of a stream.

The same summary feeds the request log, the cost and the response cache, whichever way the
answer came.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from gateway.providers.thinking import reasoning_of


@dataclass(slots=True)
class CallSummary:
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0
    # Prompt tokens written to the upstream's prompt cache (Claude's cache_creation_input_tokens).
    cache_write_tokens: int = 0
    finish_reason: str = ""
    # The answer's text as it came (a stream's pieces are joined once, not at every chunk).
    content_parts: list[str] = field(default_factory=list)
    tool_calls: dict[int, dict] = field(default_factory=dict)
    # What the model thought, as it came, and the signature that lets it come back
    # (gateway/providers/thinking.py).
    reasoning_parts: list[str] = field(default_factory=list)
    reasoning_signature: str = ""
    first_token_at: float | None = None
    has_usage: bool = False
    response_id: str = ""
    created: int = 0
    model: str = ""

    @property
    def content(self) -> str:
        return "".join(self.content_parts)

    def tool_call_list(self) -> list[dict]:
        return [
            {"name": call["name"], "arguments": call["arguments"]}
            for _, call in sorted(self.tool_calls.items())
        ]

    def take_usage(self, usage: dict | None) -> None:
        if not usage:
            return
        self.has_usage = True
        self.prompt_tokens = int(usage.get("prompt_tokens") or 0)
        self.completion_tokens = int(usage.get("completion_tokens") or 0)
        details = usage.get("prompt_tokens_details") or {}
        self.cached_tokens = int(details.get("cached_tokens") or 0)
        self.cache_write_tokens = int(details.get("cache_write_tokens") or 0)

    def take_completion(self, completion: dict) -> None:
        self.take_usage(completion.get("usage"))
        self.response_id = completion.get("id", "")
        self.created = completion.get("created", 0)
        self.model = completion.get("model", "")
        choices = completion.get("choices") or []
        if choices:
            first = choices[0]
            self.finish_reason = first.get("finish_reason") or ""
            message = first.get("message") or {}
            self.content_parts = [message.get("content") or ""]
            self.reasoning_parts = [reasoning_of(message)]
            self.reasoning_signature = message.get("reasoning_signature") or ""
            for index, call in enumerate(message.get("tool_calls") or []):
                function = call.get("function") or {}
                self.tool_calls[index] = {"id": call.get("id", ""), "name": function.get("name", ""),
                                          "arguments": function.get("arguments", "")}

    def take_chunk(self, chunk: dict) -> None:
        if usage := chunk.get("usage"):
            self.take_usage(usage)
        if not self.response_id:
            self.response_id = chunk.get("id", "")
        if not self.created:
            self.created = chunk.get("created", 0)
        if not self.model:
            self.model = chunk.get("model", "")
        for choice in chunk.get("choices") or ():
            if choice.get("index", 0) != 0:
                continue
            if delta := choice.get("delta"):
                text = delta.get("content")
                calls = delta.get("tool_calls")
                if text:
                    self.content_parts.append(text)
                if calls:
                    self._take_tool_calls(calls)
                if not text and not calls:
                    # (Thinking comes in deltas of its own.)
                    self._take_reasoning(delta)
                if (text or calls) and self.first_token_at is None:
                    self.first_token_at = time.monotonic()
            if reason := choice.get("finish_reason"):
                self.finish_reason = reason

    def _take_reasoning(self, delta: dict) -> None:
        if thought := reasoning_of(delta):
            self.reasoning_parts.append(thought)
        self.reasoning_signature = delta.get("reasoning_signature") or self.reasoning_signature

    def _take_tool_calls(self, calls: list[dict]) -> None:
        for call in calls:
            slot = self.tool_calls.setdefault(call.get("index", 0), {"id": "", "name": "", "arguments": ""})
            slot["id"] = slot["id"] or call.get("id") or ""
            function = call.get("function") or {}
            slot["name"] = slot["name"] or function.get("name") or ""
            slot["arguments"] += function.get("arguments") or ""

    def estimate_usage(self, *, prompt_tokens: int) -> None:
        """For a stream cut short before its usage arrived: a fair estimate of what was used."""
        if self.has_usage:
            return
        self.prompt_tokens = prompt_tokens
        produced = sum(map(len, self.content_parts))
        produced += sum(len(c["arguments"]) + len(c["name"]) for c in self.tool_calls.values())
        self.completion_tokens = max(1, (produced + 3) // 4)

    def as_completion(self) -> dict:
        """An OpenAI chat.completion equivalent to what was streamed (for the cache and the log)."""
        message: dict = {"role": "assistant", "content": self.content or None}
        if reasoning := "".join(self.reasoning_parts):
            message["reasoning_content"] = reasoning
        if self.reasoning_signature:
            message["reasoning_signature"] = self.reasoning_signature
        if self.tool_calls:
            message["tool_calls"] = [
                {"id": c["id"], "type": "function", "function": {"name": c["name"], "arguments": c["arguments"]}}
                for _, c in sorted(self.tool_calls.items())
            ]
        return {
            "id": self.response_id,
            "object": "chat.completion",
            "created": self.created or int(time.time()),
            "model": self.model,
            "choices": [{"index": 0, "message": message, "finish_reason": self.finish_reason or "stop"}],
            "usage": {
                "prompt_tokens": self.prompt_tokens,
                "completion_tokens": self.completion_tokens,
                "total_tokens": self.prompt_tokens + self.completion_tokens,
                "prompt_tokens_details": self._prompt_details(),
            },
        }

    def _prompt_details(self) -> dict:
        details = {"cached_tokens": self.cached_tokens}
        if self.cache_write_tokens:
            details["cache_write_tokens"] = self.cache_write_tokens
        return details
