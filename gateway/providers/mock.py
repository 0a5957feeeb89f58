"""A provider that answers by itself, without any network: demos, the embedded default.

Options: ``latency_ms`` (default 0), ``fail_rate`` (0..1, default 0) and ``fail_status``
(default 503), so a demo chain can show a fallback. It answers like a model: with tools and a
user turn last it calls the first tool (or the one ``tool_choice`` names) with arguments that
fit its schema; asked for JSON (``response_format``) it answers a JSON object, one that fits the
``json_schema`` if there is one (gateway/providers/schema_values.py); otherwise a short text
about the last message. ``n`` choices, each a little different, streamed one after the other.
It embeds each input as a unit vector of the requested dimensions, the same for the same text.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import math
import random
from collections.abc import AsyncGenerator

import aiohttp

from gateway.providers.base import ChunkStream, Event, Provider, ProviderConfig, UpstreamError, classify_status
from gateway.providers.schema_values import example_arguments, example_value
from gateway.providers.shapes import (
    ChunkMaker,
    choice,
    completion,
    embedding_inputs,
    estimate_tokens,
    input_tokens,
    max_output_tokens,
    message_texts,
    new_completion_id,
    new_tool_call_id,
    request_functions,
    tool_call,
    usage,
)

__all__ = ["MockProvider", "example_arguments", "example_value", "mock_answer"]

# A streamed answer comes in this many content (or argument) pieces, as a real model's would.
_STREAM_PIECES = 3


class MockProvider(Provider):
    def __init__(self, config: ProviderConfig) -> None:
        super().__init__(config)
        options = config.options
        self.latency_s = float(options.get("latency_ms", 0)) / 1000
        self.fail_rate = float(options.get("fail_rate", 0))
        self.fail_status = int(options.get("fail_status", 503))

    async def complete(self, session: aiohttp.ClientSession, *, body: dict, model: str, timeout_s: float,
                       output_cap: int | None = None) -> dict:
        await self._behave_like_an_upstream(timeout_s)
        return mock_answer(body, model=model, output_cap=output_cap)

    async def stream(
        self, session: aiohttp.ClientSession, *, body: dict, model: str, timeout_s: float,
        output_cap: int | None = None,
    ) -> ChunkStream:
        await self._behave_like_an_upstream(timeout_s)
        return ChunkStream(_replay(_as_chunks(mock_answer(body, model=model, output_cap=output_cap))))

    async def _behave_like_an_upstream(self, timeout_s: float) -> None:
        if self.latency_s > timeout_s:
            await asyncio.sleep(timeout_s)
            raise UpstreamError("timeout", f"no answer within {timeout_s}s")
        await asyncio.sleep(self.latency_s)
        if random.random() < self.fail_rate:
            raise classify_status(self.fail_status, None, f"mock failure ({self.fail_status})")

    async def embed(self, session: aiohttp.ClientSession, *, body: dict, model: str, timeout_s: float) -> dict:
        await self._behave_like_an_upstream(timeout_s)
        return mock_embeddings(body, model=model)


def mock_answer(body: dict, *, model: str, output_cap: int | None = None) -> dict:
    messages = body.get("messages") or []
    functions = request_functions(body)
    # An answer stops at its output limit, as a real model's does (about four characters a token).
    limit = max_output_tokens(body) or output_cap
    choices, written = [], 0
    for index in range(body.get("n") or 1):
        made, tokens = _choice(body, index, messages, functions, limit)
        choices.append(made)
        written += tokens
    return completion(
        id=new_completion_id(),
        model=model,
        choices=choices,
        usage=usage(prompt_tokens=estimate_tokens(json.dumps(messages) + json.dumps(functions)),
                    completion_tokens=written),
    )


def _choice(body: dict, index: int, messages: list[dict], functions: list[dict], limit: int | None
            ) -> tuple[dict, int]:
    """Choice ``index`` of the answer and its completion tokens. The n choices differ: each
    names its number, and JSON values vary where the schema leaves room."""
    last = messages[-1] if messages else {}
    function = _chosen_function(functions, body.get("tool_choice"))
    tool_calls = []
    text = ""
    response_format = body.get("response_format") or {}
    if function and last.get("role") == "user":
        arguments = json.dumps(example_arguments(function.get("parameters") or {}, variant=index))
        tool_calls.append(tool_call(id=new_tool_call_id(), name=function["name"], arguments=arguments))
    elif response_format.get("type") == "json_schema":
        schema = (response_format.get("json_schema") or {}).get("schema") or {"type": "object"}
        text = json.dumps(example_value(schema, variant=index))
    elif response_format.get("type") == "json_object":
        text = json.dumps({"answer": _text_answer(last, index)})
    else:
        text = _text_answer(last, index)
    written = text + "".join(call["function"]["arguments"] for call in tool_calls)
    finish_reason = "tool_calls" if tool_calls else "stop"
    if limit and estimate_tokens(written) > limit:
        text, finish_reason = text[: limit * 4], "length"
        written = text + "".join(call["function"]["arguments"] for call in tool_calls)
    tokens = min(estimate_tokens(written), limit) if limit else estimate_tokens(written)
    logprobs = _logprobs(_pieces(text), top=body.get("top_logprobs") or 0) if body.get("logprobs") else None
    return choice(index=index, text=text, tool_calls=tool_calls, finish_reason=finish_reason,
                  logprobs=logprobs), tokens


def _logprobs(tokens: list[str], *, top: int) -> dict:
    """Made-up log probabilities of the answer's tokens (the pieces it streams in), each the
    likeliest of its ``top`` alternatives."""
    def token(text: str, logprob: float) -> dict:
        return {"token": text, "logprob": logprob, "bytes": list(text.encode())}

    def alternatives(text: str) -> list[dict]:
        return [token(text + "~" * rank, -0.1 - rank) for rank in range(top)]

    return {"content": [{**token(text, -0.1), "top_logprobs": alternatives(text)} for text in tokens],
            "refusal": None}


def _text_answer(last: dict, index: int) -> str:
    said = "".join(message_texts(last.get("content")))
    if last.get("role") == "tool":
        return f"The tool answered: {said}"
    return f"Mock answer to: {said}" if index == 0 else f"Mock answer {index + 1} to: {said}"


def _chosen_function(functions: list[dict], tool_choice: str | dict | None) -> dict | None:
    if tool_choice == "none" or not functions:
        return None
    if isinstance(tool_choice, dict):
        wanted = tool_choice["function"]["name"]
        return next((function for function in functions if function["name"] == wanted), None)
    return functions[0]


def _as_chunks(answer: dict) -> list[dict]:
    """The answer streamed: each choice in turn (its role, its pieces, its finish), then the usage."""
    chunks = ChunkMaker(id=answer["id"], model=answer["model"])
    stream = []
    for each in answer["choices"]:
        at, message = each["index"], each["message"]
        stream.append(chunks.role(index=at))
        logprobs = (each.get("logprobs") or {}).get("content")
        stream += [
            chunks.delta({"content": piece}, index=at,
                         logprobs={"content": [logprobs[number]], "refusal": None} if logprobs else None)
            for number, piece in enumerate(_pieces(message["content"] or ""))
        ]
        for position, call in enumerate(message.get("tool_calls") or []):
            head = {"index": position, **tool_call(id=call["id"], name=call["function"]["name"], arguments="")}
            stream.append(chunks.delta({"tool_calls": [head]}, index=at))
            stream += [
                chunks.delta({"tool_calls": [{"index": position, "function": {"arguments": piece}}]}, index=at)
                for piece in _pieces(call["function"]["arguments"])
            ]
        stream.append(chunks.finish(each["finish_reason"], index=at))
    return stream + [chunks.usage(answer["usage"])]


def _pieces(text: str) -> list[str]:
    size = max(1, math.ceil(len(text) / _STREAM_PIECES))
    return [text[start : start + size] for start in range(0, len(text), size)]


async def _replay(chunks: list[dict]) -> AsyncGenerator[list[Event], None]:
    """One chunk at a time, each written separately as a real upstream's would be."""
    for chunk in chunks:
        yield [(chunk, None)]


# --- embeddings ------------------------------------------------------------------------------

# The size of a model's vectors when the request names none; other models make 768.
_EMBEDDING_DIMENSIONS = {"text-embedding-3-small": 1536, "text-embedding-3-large": 3072, "gemini-embedding-001": 3072}
_DEFAULT_DIMENSIONS = 768


def mock_embeddings(body: dict, *, model: str) -> dict:
    """An OpenAI embeddings response: for each input a unit vector of the requested size, the
    same for the same text (its bytes drawn from the text's SHAKE-256 digest, fast enough for a
    list of thousands on the event loop)."""
    dimensions = body.get("dimensions") or _EMBEDDING_DIMENSIONS.get(model.split("@", 1)[0], _DEFAULT_DIMENSIONS)
    data = [{"object": "embedding", "index": index, "embedding": mock_vector(item, dimensions)}
            for index, item in enumerate(embedding_inputs(body))]
    tokens = input_tokens(body)
    return {"object": "list", "data": data, "model": model, "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}


def mock_vector(item: str | list[int], dimensions: int) -> list[float]:
    vector = [byte - 127.5 for byte in hashlib.shake_256(json.dumps(item).encode()).digest(dimensions)]
    norm = math.sqrt(sum(value * value for value in vector))
    return [value / norm for value in vector]
