"""A fake Vertex AI Gemini endpoint, answering in the shape of the recorded traffic: function
calls whole in the event that finishes, ``\\r\\n\\r\\n`` between events, thought signatures,
thinking tokens counted apart, errors of a streamed call wrapped in an array. Asked for its
thoughts (``thinkingConfig.includeThoughts``), it thinks first in ``thought: true`` parts (the
first events of a stream), and signs the answer: its first function call, or else its last text
part (the last text event of a stream), as Google documents it."""

from __future__ import annotations

import base64
import json
import os
import re
import secrets
from datetime import UTC, datetime
from typing import Any

from gateway.providers.shapes import estimate_tokens
from tests.fakes.behaviours import Reply, Status
from tests.fakes.server import Conversation, FakeUpstream, ReceivedRequest, plan_reply, split_text

THOUGHTS_TOKEN_COUNT = 17
_GOOGLE_STATUS = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    429: "RESOURCE_EXHAUSTED",
    500: "INTERNAL",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}


class FakeGemini(FakeUpstream):
    paths = ("/v1/projects/{project}/locations/{location}/publishers/google/models/{model_and_method}",)

    def __init__(self, *, require_thought_signatures: bool = False) -> None:
        """``require_thought_signatures``: refuse a model turn whose first function call does not
        carry back a signature this fake issued, as Gemini 3 does."""
        super().__init__()
        self.require_thought_signatures = require_thought_signatures
        self.signatures_issued: list[str] = []

    def provider_options(self, **extra: Any) -> dict:
        return {"base_url": self.base_url, "project": "fake-project", "location": "us-east5", **extra}

    def is_stream(self, request: ReceivedRequest) -> bool:
        return request.path.endswith(":streamGenerateContent")

    def refusal(self, request: ReceivedRequest) -> Status | None:
        model = request.path.rsplit("/", 1)[-1].split(":")[0]
        if thinking := _thinking_refusal(model, (request.json.get("generationConfig") or {}).get("thinkingConfig")):
            return Status(400, message=thinking)
        if not self.require_thought_signatures:
            return None
        for content in request.json.get("contents", []):
            calls = [part for part in content.get("parts", []) if "functionCall" in part]
            if calls and calls[0].get("thoughtSignature") not in self.signatures_issued:
                return Status(400, message="Function call is missing a thought_signature in functionCall parts.")
        return None

    def answer(self, request: ReceivedRequest, reply: Reply, *, stream: bool) -> Any:
        plan = plan_reply(reply, _conversation(request.json))
        model = request.path.rsplit("/", 1)[-1].split(":")[0]
        response_id = secrets.token_urlsafe(16)
        created = datetime.now(UTC).isoformat()
        call_parts: list[dict] = [{"functionCall": {"name": name, "args": args}} for name, args in plan.tool_calls]
        if call_parts:
            # Like Gemini, only the first of parallel calls is signed.
            call_parts[0]["thoughtSignature"] = self._new_signature()
        prompt_tokens = len(request.body) // 4
        candidates_tokens = estimate_tokens(plan.text + json.dumps(plan.tool_calls))
        usage = {
            "promptTokenCount": prompt_tokens,
            "candidatesTokenCount": candidates_tokens,
            "totalTokenCount": prompt_tokens + candidates_tokens + THOUGHTS_TOKEN_COUNT,
            "trafficType": "ON_DEMAND",
            "thoughtsTokenCount": THOUGHTS_TOKEN_COUNT,
        }

        config = request.json.get("generationConfig") or {}
        thinks = reply.thinks and bool((config.get("thinkingConfig") or {}).get("includeThoughts"))
        thoughts = f"Thinking about: {_conversation(request.json).last_text}" if thinks else ""

        def response(parts: list[dict], *, last: bool) -> dict:
            candidate: dict[str, Any] = {"content": {"role": "model", "parts": parts}}
            text = "".join(part.get("text", "") for part in parts)
            if config.get("responseLogprobs") and text:
                candidate["logprobsResult"] = _logprobs(text, top=config.get("logprobs") or 0)
            if last:
                candidate["finishReason"] = "STOP"
            return {
                "candidates": [candidate],
                "usageMetadata": usage if last else {"trafficType": "ON_DEMAND"},
                "modelVersion": model,
                "createTime": created,
                "responseId": response_id,
            }

        if not stream:
            text_parts = [{"text": plan.text}] if plan.text else []
            if thinks and text_parts and not call_parts:
                text_parts[-1]["thoughtSignature"] = self._new_signature()
            thought_parts = [{"text": thoughts, "thought": True}] if thinks else []
            return response(thought_parts + text_parts + call_parts, last=True)
        text_parts = [[{"text": piece}] for piece in split_text(plan.text)] if plan.text or not call_parts else []
        if thinks and text_parts and not call_parts:
            text_parts[-1][0]["thoughtSignature"] = self._new_signature()
        thought_parts = [[{"text": piece, "thought": True}] for piece in split_text(thoughts)] if thinks else []
        pieces = [*thought_parts, *text_parts, call_parts] if call_parts else [*thought_parts, *text_parts]
        events = [response(parts, last=number == len(pieces) - 1) for number, parts in enumerate(pieces)]
        return [_event(event) for event in events]

    def error_body(self, status: int, message: str, *, stream: bool) -> Any:
        error = {"error": {"code": status, "message": message, "status": _GOOGLE_STATUS.get(status, "UNKNOWN")}}
        return [error] if stream else error

    def error_event(self, status: int, message: str) -> bytes:
        return _event(self.error_body(status, message, stream=False))

    def _new_signature(self) -> str:
        # Leading bytes that encode to '+' and '/', and a length that needs padding: the
        # characters a signature must keep through a tool call id.
        signature = base64.b64encode(b"\xfb\xff\xbf" + os.urandom(31)).decode()
        self.signatures_issued.append(signature)
        return signature


def _conversation(body: dict) -> Conversation:
    contents = body.get("contents") or []
    mode = ((body.get("toolConfig") or {}).get("functionCallingConfig") or {}).get("mode")
    declarations = [declaration for tool in body.get("tools") or [] for declaration in tool["functionDeclarations"]]
    last_parts = contents[-1]["parts"] if contents else []
    return Conversation(
        tools=[] if mode == "NONE" else [(d["name"], d.get("parameters") or {}) for d in declarations],
        tool_results=[
            json.dumps(part["functionResponse"]["response"]) for part in last_parts if "functionResponse" in part
        ],
        last_text="".join(part.get("text", "") for part in last_parts),
    )


def _thinking_refusal(model: str, thinking: dict | None) -> str | None:
    """What Gemini refuses of a thinkingConfig: 2.5 takes budgets (Pro 128..32768, Flash and
    Flash-Lite 0..24576), 3 takes levels."""
    if not thinking:
        return None
    if model.startswith("gemini-3"):
        return None if "thinkingBudget" not in thinking else "thinking_budget is not supported by this model"
    if "thinkingLevel" in thinking:
        return "Thinking level is not supported for this model."
    budget = thinking.get("thinkingBudget", -1)
    low, high = (128, 32768) if "-pro" in model else (0, 24576)
    if budget != -1 and not low <= budget <= high:
        return f"The thinking budget {budget} is invalid. Please choose a value between {low} and {high}."
    return None


def _logprobs(text: str, *, top: int) -> dict:
    """A logprobsResult of the text, a token a word (with the spaces after it)."""
    tokens = re.findall(r"\s*\S+\s*", text)
    chosen = [{"token": token, "logProbability": -0.25} for token in tokens]
    alternatives = [{"candidates": [{"token": token, "logProbability": -0.25},
                                    *({"token": f"{token}?", "logProbability": -3.5} for _ in range(top - 1))]}
                    for token in tokens] if top else []
    return {"topCandidates": alternatives, "chosenCandidates": chosen}


def _event(data: Any) -> bytes:
    return b"data: " + json.dumps(data).encode() + b"\r\n\r\n"
