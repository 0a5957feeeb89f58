"""The OpenAI shapes on both sides of every provider: reading the request a client sent, and
building the answer it expects, so that every wire format reads and answers alike."""

from __future__ import annotations

import json
import secrets
import string
import time
from typing import Any

import orjson

from gateway.providers.base import UpstreamError

# --- reading an OpenAI request -----------------------------------------------------------------

# As deep as orjson writes JSON (an OpenAI upstream's body, the log row's request body): a body
# or tool call arguments nested deeper could be parsed but never sent on nor logged.
MAX_NESTING = 255


class Untranslatable(UpstreamError):
    """A request this wire format cannot carry: refused before anything is sent, not retried on
    the next link (the caller has to change it). ``param``: the request field at fault, if one is."""

    def __init__(self, message: str, *, param: str | None = None) -> None:
        super().__init__("client", message, status=400)
        self.param = param


def untranslatable(message: str, *, param: str | None = None) -> Untranslatable:
    return Untranslatable(message, param=param)


def request_functions(body: dict) -> list[dict]:
    """The ``function`` of each tool the request offers."""
    return [tool["function"] for tool in body.get("tools") or [] if tool.get("type") == "function"]


def max_output_tokens(body: dict) -> int | None:
    return body.get("max_completion_tokens") or body.get("max_tokens")


def stop_sequences(body: dict) -> list[str]:
    stop = body.get("stop") or []
    return [stop] if isinstance(stop, str) else list(stop)


def message_texts(content: str | list | None) -> list[str]:
    """The text of a message's ``content``, a string or a list of parts."""
    if content is None:
        return []
    if isinstance(content, str):
        return [content]
    return [part["text"] for part in content if part.get("type") == "text"]


def image_url(part: dict) -> str:
    image = part["image_url"]
    return image if isinstance(image, str) else image["url"]


def parse_data_uri(url: str) -> tuple[str, str] | None:
    """``data:<mime>;base64,<data>`` as (mime, data); ``None`` for any other URL."""
    if not url.startswith("data:"):
        return None
    header, _, data = url[5:].partition(",")
    mime, _, encoding = header.partition(";")
    if encoding != "base64" or not data:
        raise untranslatable("data URLs must be base64-encoded")
    return mime or "application/octet-stream", data


def parse_arguments(arguments: str | None) -> dict:
    """A tool call's ``arguments`` JSON string, as the object the other wire formats want."""
    if not arguments:
        return {}
    try:
        parsed = json.loads(arguments)
    except (ValueError, RecursionError) as exc:
        raise untranslatable(f"tool call arguments are not valid JSON: {arguments[:100]}") from exc
    if not isinstance(parsed, dict):
        raise untranslatable("tool call arguments must be a JSON object")
    # Counting brackets is cheap and bounds the depth: only arguments with that many are encoded.
    if arguments.count("[") + arguments.count("{") > MAX_NESTING:
        try:
            orjson.dumps(parsed)
        except orjson.JSONEncodeError as exc:
            raise untranslatable(f"tool call arguments are nested more than {MAX_NESTING} levels deep") from exc
    return parsed


def append_turn(turns: list[dict], role: str, items: list[dict], *, key: str) -> None:
    """Add a turn, merged into the previous one when it has the same role: Gemini and Claude
    want the roles to alternate, and parallel tool results to go back as one turn."""
    if not items:
        return
    if turns and turns[-1]["role"] == role:
        turns[-1][key].extend(items)
    else:
        turns.append({"role": role, key: items})


# --- building an OpenAI answer ----------------------------------------------------------------

_ALPHANUMERIC = string.ascii_letters + string.digits


def random_alphanumeric(length: int) -> str:
    return "".join(secrets.choice(_ALPHANUMERIC) for _ in range(length))


def new_completion_id() -> str:
    return "chatcmpl-" + random_alphanumeric(29)


def new_tool_call_id() -> str:
    return "call_" + random_alphanumeric(24)


def estimate_tokens(text: str) -> int:
    """About four characters per token: good enough where the upstream gives no count."""
    return (len(text) + 3) // 4


def embedding_inputs(body: dict) -> list:
    """An embeddings request's inputs as a list: strings, or token arrays."""
    value = body["input"]
    if isinstance(value, str) or (value and not isinstance(value[0], str | list)):
        return [value]
    return value


def input_tokens(body: dict) -> int:
    """An embeddings request's tokens, where the upstream counts none: a token array's length,
    a text's estimate."""
    return sum(len(item) if isinstance(item, list) else estimate_tokens(item) for item in embedding_inputs(body))


def usage(*, prompt_tokens: int, completion_tokens: int, cached_tokens: int = 0, reasoning_tokens: int = 0,
          cache_write_tokens: int = 0) -> dict:
    """``cache_write_tokens``: prompt tokens written to the upstream's prompt cache (Claude's),
    priced apart; named only when there are some."""
    prompt_details = {"cached_tokens": cached_tokens}
    if cache_write_tokens:
        prompt_details["cache_write_tokens"] = cache_write_tokens
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
        "prompt_tokens_details": prompt_details,
        "completion_tokens_details": {"reasoning_tokens": reasoning_tokens},
    }


def arguments_json(arguments: dict) -> str:
    """Tool call arguments as OpenAI sends them: compact JSON."""
    return json.dumps(arguments, ensure_ascii=False, separators=(",", ":"))


def tool_call(*, id: str, name: str, arguments: str) -> dict:
    return {"id": id, "type": "function", "function": {"name": name, "arguments": arguments}}


def choice(*, index: int, text: str, tool_calls: list[dict], finish_reason: str, logprobs: dict | None = None) -> dict:
    # OpenAI sends ``content: null`` when the model only called tools.
    message: dict = {"role": "assistant", "content": text if text or not tool_calls else None}
    if tool_calls:
        message["tool_calls"] = tool_calls
    return {"index": index, "message": message, "finish_reason": finish_reason, "logprobs": logprobs}


def completion(*, id: str, model: str, choices: list[dict], usage: dict) -> dict:
    return {
        "id": id,
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": choices,
        "usage": usage,
    }


class ChunkMaker:
    """Makes the ``chat.completion.chunk`` dicts of one stream, all sharing its id and time."""

    def __init__(self, *, id: str, model: str) -> None:
        self.id = id
        self.model = model
        self.created = int(time.time())

    def _chunk(self, choices: list[dict], **extra: object) -> dict:
        return {
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": choices,
            **extra,
        }

    def role(self, *, index: int = 0) -> dict:
        return self.delta({"role": "assistant", "content": ""}, index=index)

    def delta(self, delta: dict, *, index: int = 0, logprobs: dict | None = None) -> dict:
        piece = {"index": index, "delta": delta, "finish_reason": None}
        if logprobs is not None:
            piece["logprobs"] = logprobs
        return self._chunk([piece])

    def finish(self, reason: str, *, index: int = 0) -> dict:
        return self._chunk([{"index": index, "delta": {}, "finish_reason": reason}])

    def usage(self, usage: dict) -> dict:
        return self._chunk([], usage=usage)


def load_upstream_json(data: bytes | str) -> Any:
    """An upstream body that is not JSON is the upstream's fault, not the caller's."""
    try:
        return orjson.loads(data)
    except ValueError as exc:
        raise UpstreamError("server", f"malformed JSON from upstream: {exc}") from exc
