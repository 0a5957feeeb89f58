"""``POST /v1/chat/completions``: OpenAI's Chat Completions, the gateway's internal form too.

Its requests are checked (gateway/dialects/chat_completions_request.py) and go on as they came;
its answers and chunks are the providers' own output, relayed as they were framed.
"""

from __future__ import annotations

from gateway.dialects.chat_completions_request import ChatRequest, parse_chat_request
from gateway.errors import GatewayError
from gateway.http import SSE_DONE, header, send_json, sse_event
from gateway.providers.base import Event
from gateway.summary import CallSummary


class ChatCompletions:
    endpoint = "chat.completions"

    def parse(self, raw: bytes, scope) -> ChatRequest:
        return parse_chat_request(raw, tags_header=header(scope, b"x-nemo-tags"))

    async def answer(self, send, request: ChatRequest, completion: dict, headers: dict[str, str]) -> None:
        await send_json(send, 200, completion, headers)

    def stream(self, request: ChatRequest) -> ChatStream:
        return ChatStream(request.include_usage)

    def replay(self, request: ChatRequest, completion: dict) -> bytes:
        events = [sse_event(chunk) for chunk in completion_as_chunks(completion)
                  if chunk["choices"] or request.include_usage]
        return b"".join(events) + SSE_DONE

    async def refuse(self, send, error: GatewayError, headers: dict[str, str]) -> None:
        await send_json(send, error.status, error.body(), headers)


class ChatStream:
    __slots__ = ("include_usage",)

    def __init__(self, include_usage: bool) -> None:
        self.include_usage = include_usage

    def events(self, batch: list[Event]) -> bytes:
        # A chunk the upstream framed as it goes to the client is sent as it came, not encoded
        # again. The usage chunk (no choices) only to a client that asked for it.
        include_usage = self.include_usage
        return b"".join([encoded or sse_event(chunk) for chunk, encoded in batch
                         if chunk.get("choices") or include_usage])

    def end(self, summary: CallSummary) -> bytes:
        return SSE_DONE

    def failed(self, error: GatewayError) -> bytes:
        return sse_event(error.body()) + SSE_DONE


def completion_as_chunks(completion: dict) -> list[dict]:
    """Replays a whole completion as a stream (a cache hit for a streamed request)."""
    base = {"id": completion.get("id", ""), "object": "chat.completion.chunk",
            "created": completion.get("created", 0), "model": completion.get("model", "")}
    chunks = []
    for choice in completion.get("choices") or []:
        index = choice.get("index", 0)
        message = choice.get("message") or {}
        chunks.append({**base, "choices": [{"index": index, "delta": {"role": "assistant", "content": ""},
                                            "finish_reason": None}]})
        if message.get("content"):
            chunks.append({**base, "choices": [{"index": index, "delta": {"content": message["content"]},
                                                "finish_reason": None}]})
        for call_index, call in enumerate(message.get("tool_calls") or []):
            chunks.append({**base, "choices": [{"index": index, "delta": {"tool_calls": [
                {"index": call_index, "id": call.get("id"), "type": "function", "function": call.get("function")}
            ]}, "finish_reason": None}]})
        finish = {"index": index, "delta": {}, "finish_reason": choice.get("finish_reason")}
        chunks.append({**base, "choices": [finish]})
    chunks.append({**base, "choices": [], "usage": completion.get("usage")})
    return chunks
