"""Parsing and checking a Chat Completions request: anything malformed is a 400, never a 500."""

from __future__ import annotations

from dataclasses import dataclass

import orjson

from gateway.errors import invalid_request

ROLES = {"system", "developer", "user", "assistant", "tool", "function"}
NEMO_FIELDS = ("tags", "nemo_cache")
MAX_N = 16


@dataclass(slots=True)
class ChatRequest:
    body: dict  # what goes upstream: the client's body without Nemo's own fields
    model: str
    stream: bool
    include_usage: bool
    max_tokens: int | None
    n: int
    tags: frozenset[str]
    use_cache: bool | None
    prompt_bytes: int

    @property
    def messages(self) -> list[dict]:
        return self.body["messages"]

    @property
    def has_tools(self) -> bool:
        return bool(self.body.get("tools"))


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _check_message(index: int, message) -> None:
    where = f"messages[{index}]"
    if not isinstance(message, dict):
        raise invalid_request(f"{where} must be an object", param=where)
    role = message.get("role")
    if role not in ROLES:
        raise invalid_request(f"{where}.role must be one of {', '.join(sorted(ROLES))}", param=f"{where}.role")
    content = message.get("content")
    if content is not None and not isinstance(content, str | list):
        raise invalid_request(f"{where}.content must be a string or a list of parts", param=f"{where}.content")
    if isinstance(content, list) and not all(isinstance(p, dict) and "type" in p for p in content):
        raise invalid_request(f"{where}.content parts must be objects with a type", param=f"{where}.content")
    if role == "tool" and not isinstance(message.get("tool_call_id"), str):
        raise invalid_request(f"{where}.tool_call_id is required for a tool message", param=f"{where}.tool_call_id")
    tool_calls = message.get("tool_calls")
    if tool_calls is not None:
        if role != "assistant" or not isinstance(tool_calls, list):
            raise invalid_request(f"{where}.tool_calls must be a list on an assistant message",
                                  param=f"{where}.tool_calls")
        for call in tool_calls:
            function = call.get("function") if isinstance(call, dict) else None
            if not isinstance(function, dict) or not isinstance(function.get("name"), str):
                raise invalid_request(f"{where}.tool_calls entries need a function name", param=f"{where}.tool_calls")
    if content is None and role != "assistant":
        raise invalid_request(f"{where}.content is required", param=f"{where}.content")


def _check_tools(tools) -> None:
    if not isinstance(tools, list):
        raise invalid_request("tools must be a list", param="tools")
    for index, tool in enumerate(tools):
        function = tool.get("function") if isinstance(tool, dict) else None
        if not isinstance(tool, dict) or tool.get("type") != "function" or not isinstance(function, dict) \
                or not isinstance(function.get("name"), str) or not function["name"]:
            raise invalid_request(f"tools[{index}] must be {{'type': 'function', 'function': {{'name': ...}}}}",
                                  param=f"tools[{index}]")


def _positive_int(body: dict, name: str) -> int | None:
    value = body.get(name)
    if value is None:
        return None
    if not _is_int(value) or value < 1:
        raise invalid_request(f"{name} must be a positive integer", param=name)
    return value


def _range(body: dict, name: str, low: float, high: float) -> None:
    value = body.get(name)
    if value is not None and (not _is_number(value) or not low <= value <= high):
        raise invalid_request(f"{name} must be a number from {low} to {high}", param=name)


def _tags(body: dict, header_value: str | None) -> frozenset[str]:
    raw = body.get("tags")
    if raw is None:
        tags: list[str] = []
    elif isinstance(raw, str):
        tags = [raw]
    elif isinstance(raw, list) and all(isinstance(t, str) for t in raw):
        tags = raw
    else:
        raise invalid_request("tags must be a list of strings", param="tags")
    if header_value:
        tags = [*tags, *header_value.split(",")]
    return frozenset(t.strip() for t in tags if t.strip())


def parse_chat_request(raw: bytes, *, tags_header: str | None) -> ChatRequest:
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise invalid_request(f"The body is not valid JSON: {exc}") from exc
    if not isinstance(body, dict):
        raise invalid_request("The body must be a JSON object.")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise invalid_request("model is required", param="model")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise invalid_request("messages must be a non-empty list", param="messages")
    for index, message in enumerate(messages):
        _check_message(index, message)
    if body.get("tools") is not None:
        _check_tools(body["tools"])
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise invalid_request("stream must be a boolean", param="stream")
    stream_options = body.get("stream_options")
    if stream_options is not None and not isinstance(stream_options, dict):
        raise invalid_request("stream_options must be an object", param="stream_options")
    max_tokens = _positive_int(body, "max_completion_tokens") or _positive_int(body, "max_tokens")
    n = _positive_int(body, "n") or 1
    if n > MAX_N:
        raise invalid_request(f"n must be at most {MAX_N}", param="n")
    _range(body, "temperature", 0, 2)
    _range(body, "top_p", 0, 1)
    stop = body.get("stop")
    if stop is not None and not (isinstance(stop, str) or (
            isinstance(stop, list) and len(stop) <= 4 and all(isinstance(s, str) for s in stop))):
        raise invalid_request("stop must be a string or a list of up to 4 strings", param="stop")
    response_format = body.get("response_format")
    if response_format is not None and not (isinstance(response_format, dict) and "type" in response_format):
        raise invalid_request("response_format must be an object with a type", param="response_format")
    use_cache = body.get("nemo_cache")
    if use_cache is not None and not isinstance(use_cache, bool):
        raise invalid_request("nemo_cache must be a boolean", param="nemo_cache")
    tags = _tags(body, tags_header)
    upstream_body = {k: v for k, v in body.items() if k not in NEMO_FIELDS}
    return ChatRequest(
        body=upstream_body,
        model=model,
        stream=stream,
        include_usage=bool(stream_options and stream_options.get("include_usage")),
        max_tokens=max_tokens,
        n=n,
        tags=tags,
        use_cache=use_cache,
        # A byte-level tokenizer never makes more tokens than bytes, and the raw body holds the
        # whole prompt (messages and tools), so its size bounds the prompt tokens.
        prompt_bytes=len(raw),
    )
