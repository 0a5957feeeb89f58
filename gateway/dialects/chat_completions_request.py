"""Parsing and checking a Chat Completions request: anything malformed is a 400, never a 500.

Every value that a provider's translation, the response cache or the request log reads is
checked here for its type, once, before anything is reserved or sent: a text part of ``5`` that
only fails in the log, after the upstream served the call, is a call nobody pays for and nobody
sees. Fields the gateway does not know pass through to an OpenAI-compatible upstream unchecked;
a wire format that cannot carry a field refuses it by name before anything is sent
(gateway/providers/fields.py), so none is dropped while the call answers 200.

A check returns ``None`` or a ``Problem``, (where, relative to the value checked, what it must
be); the caller that knows the path prefixes it. So the usual, valid request builds no strings.

Over 400 lines: a check for every field of the body a translator, the cache or the log reads,
each beside the shape it allows; split, the table of fields would be read in pieces.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import orjson

from gateway.errors import invalid_request
from gateway.http import json_object
from gateway.providers.fields import REASONING_EFFORTS
from gateway.providers.shapes import MAX_NESTING
from gateway.providers.thinking import THINKING_BUDGET

ROLES = {"system", "developer", "user", "assistant", "tool", "function"}
NEMO_FIELDS = ("tags", "nemo_cache")
MAX_N = 16
# The prompt tokens an image named by URL is reserved at (``linked_media_tokens``).
LINKED_IMAGE_TOKENS = 2_700
# ... and a file it names by id: more than any context window, so the window bounds it.
LINKED_FILE_TOKENS = 100_000_000
# Gemini's maxOutputTokens is an int32; no model writes more, and the reservation stays a sane number.
MAX_OUTPUT_TOKENS = 2**31 - 1
TOOL_CHOICES = ("none", "auto", "required")
RESPONSE_FORMATS = ("text", "json_object", "json_schema")

Problem = tuple[str, str] | None
Check = type | Callable[[Any], Problem]


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
    # An answer with output tokens, which a call that names no limit is fitted one for.
    has_output = True
    # A call that is limited, reserved and charged (a token count is none of these).
    charged = True

    @property
    def messages(self) -> list[dict]:
        return self.body["messages"]

    @staticmethod
    def logged_answer(answer: dict) -> dict:
        """The answer as the request log keeps it."""
        return answer

    @property
    def has_tools(self) -> bool:
        return bool(self.body.get("tools"))

    @property
    def metadata(self) -> dict | None:
        """The client's ``metadata`` (checked: an object of strings), which the log row keeps as tags."""
        return self.body.get("metadata")

    @property
    def method(self) -> str:
        """The provider method that serves this call (``router.call_chain``)."""
        return "stream" if self.stream else "complete"


R = TypeVar("R", bound=ChatRequest)


# --- checks of one value ------------------------------------------------------------------------

# A check is a type (the value must be an instance: tested inline, no call) or a function.
_EXPECTED = {str: "a string", bool: "a boolean", dict: "an object", list: "a list"}


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _problem(check: Check, value) -> Problem:
    if type(check) is type:
        return None if isinstance(value, check) else ("", _EXPECTED[check])
    return check(value)


def _integer(low: int, high: int) -> Check:
    return lambda value: None if _is_int(value) and low <= value <= high else ("", f"an integer from {low} to {high}")


def _number(low: float, high: float) -> Check:
    return lambda value: None if _is_number(value) and low <= value <= high else ("", f"a number from {low} to {high}")


def _fields(checks: dict[str, Check], value: dict, required: tuple[str, ...] = ()) -> Problem:
    """The first problem of an object's fields that have a check: a required one missing, or a
    field of the wrong type (a field that is null counts as left out). No check takes None, so
    what it says of None says what a missing field must be."""
    for name in required:
        if value.get(name) is None:
            return f".{name}", _problem(checks[name], None)[1]
    for name, field in value.items():
        check = checks.get(name)
        if check is None or field is None:
            continue
        if type(check) is type:
            if not isinstance(field, check):
                return f".{name}", _EXPECTED[check]
        elif (problem := check(field)) is not None:
            return f".{name}{problem[0]}", problem[1]
    return None


def _object_with(checks: dict[str, Check], *, required: tuple[str, ...] = ()) -> Check:
    return lambda value: _fields(checks, value, required) if isinstance(value, dict) else ("", "an object")


def _stop(value) -> Problem:
    if isinstance(value, str) or (isinstance(value, list) and len(value) <= 4
                                  and all(isinstance(item, str) for item in value)):
        return None
    return "", "a string or a list of up to 4 strings"


def _metadata(value) -> Problem:
    if isinstance(value, dict) and all(isinstance(item, str) for item in value.values()):
        return None
    return "", "an object of strings"


def _logit_bias(value) -> Problem:
    if isinstance(value, dict) and all(_is_number(bias) and -100 <= bias <= 100 for bias in value.values()):
        return None
    return "", "an object of token ids to numbers from -100 to 100"


def _one_of(values: tuple[str, ...]) -> Check:
    return lambda value: None if value in values else ("", f"one of {', '.join(values)}")


def _tags(value) -> Problem:
    if isinstance(value, str) or (isinstance(value, list) and all(isinstance(tag, str) for tag in value)):
        return None
    return "", "a list of strings"


# --- messages -----------------------------------------------------------------------------------

_image_url_object = _object_with({"url": str, "detail": str}, required=("url",))


def _image_url(value) -> Problem:
    # A bare URL string is what some clients send; every provider takes it.
    return None if isinstance(value, str) else _image_url_object(value)


# What each provider reads of a content part, by its type. Parts of other types pass: an
# OpenAI-compatible upstream may know them, and the other translators refuse them by name.
_PART_FIELDS: dict[str, Check] = {
    "text": _object_with({"text": str}, required=("text",)),
    "image_url": _object_with({"image_url": _image_url}, required=("image_url",)),
    "input_audio": _object_with({"input_audio": _object_with({"data": str, "format": str},
                                                             required=("data", "format"))},
                                required=("input_audio",)),
    "file": _object_with({"file": _object_with({"file_data": str, "file_id": str, "filename": str})},
                         required=("file",)),
    "refusal": _object_with({"refusal": str}, required=("refusal",)),
}


def _content(value) -> Problem:
    if isinstance(value, str):
        return None
    if not isinstance(value, list):
        return "", "a string or a list of parts"
    for position, part in enumerate(value):
        if not isinstance(part, dict):
            return f"[{position}]", "an object"
        kind = part.get("type")
        # Text, the usual part, is checked inline.
        if kind == "text" and isinstance(part.get("text"), str):
            continue
        if not isinstance(kind, str):
            return f"[{position}].type", "a string"
        check = _PART_FIELDS.get(kind)
        if check is not None and (problem := check(part)) is not None:
            return f"[{position}]{problem[0]}", problem[1]
    return None


def _function_call(value) -> Problem:
    """A call the model asked for, ``{"name", "arguments"}``; the arguments are a JSON string."""
    if not isinstance(value, dict):
        return "", "an object"
    if not isinstance(value.get("name"), str):
        return ".name", "a string"
    arguments = value.get("arguments")
    if arguments is not None and not isinstance(arguments, str):
        return ".arguments", "a string (of JSON)"
    return None


def _tool_call(value) -> Problem:
    if not isinstance(value, dict):
        return "", "an object"
    call_id = value.get("id")
    if call_id is not None and not isinstance(call_id, str):
        return ".id", "a string"
    if value.get("type") not in (None, "function"):
        return ".type", '"function"'
    if (problem := _function_call(value.get("function"))) is not None:
        return f".function{problem[0]}", problem[1]
    return None


def _tool_calls(value) -> Problem:
    if not isinstance(value, list):
        return "", "a list"
    for position, call in enumerate(value):
        if (problem := _tool_call(call)) is not None:
            return f"[{position}]{problem[0]}", problem[1]
    return None


# The fields of a message besides its role and content that a translation or the log reads.
_MESSAGE_FIELDS: dict[str, Check] = {
    "name": str,
    "tool_call_id": str,
    "tool_calls": _tool_calls,
    "function_call": _function_call,
    "refusal": str,
}


def _message(message) -> Problem:
    if not isinstance(message, dict):
        return "", "an object"
    role = message.get("role")
    if not isinstance(role, str) or role not in ROLES:
        return ".role", f"one of {', '.join(sorted(ROLES))}"
    content = message.get("content")
    if content is None:
        if role != "assistant":
            return ".content", "a string or a list of parts"
    elif (problem := _content(content)) is not None:
        return f".content{problem[0]}", problem[1]
    if role == "tool" and not isinstance(message.get("tool_call_id"), str):
        return ".tool_call_id", "a string (the id of the tool call answered)"
    if len(message) == 2 and content is not None:
        # A role and a content, the usual message: nothing else to check.
        return None
    if role != "assistant" and message.get("tool_calls") is not None:
        return ".tool_calls", "only on an assistant message"
    return _fields(_MESSAGE_FIELDS, message)


def _messages(value) -> Problem:
    if not isinstance(value, list) or not value:
        return "", "a non-empty list"
    for index, message in enumerate(value):
        if (problem := _message(message)) is not None:
            return f"[{index}]{problem[0]}", problem[1]
    return None


# --- tools ----------------------------------------------------------------------------------------

_FUNCTION_FIELDS: dict[str, Check] = {"description": str, "parameters": dict, "strict": bool}


def _tool(value) -> Problem:
    if not isinstance(value, dict) or value.get("type") != "function":
        return "", "{'type': 'function', 'function': {'name': ...}}"
    function = value.get("function")
    if not isinstance(function, dict):
        return ".function", "an object"
    name = function.get("name")
    if not isinstance(name, str) or not name:
        return ".function.name", "a non-empty string"
    if (problem := _fields(_FUNCTION_FIELDS, function)) is not None:
        return f".function{problem[0]}", problem[1]
    return None


def _tools(value) -> Problem:
    if not isinstance(value, list):
        return "", "a list"
    for index, tool in enumerate(value):
        if (problem := _tool(tool)) is not None:
            return f"[{index}]{problem[0]}", problem[1]
    return None


_function_named = _object_with({"function": _object_with({"name": str}, required=("name",))}, required=("function",))


def _tool_choice(value) -> Problem:
    if isinstance(value, str):
        return None if value in TOOL_CHOICES else ("", f"one of {', '.join(TOOL_CHOICES)} or a function to call")
    if not isinstance(value, dict):
        return "", f"one of {', '.join(TOOL_CHOICES)} or a function to call"
    if value.get("type") != "function":
        return ".type", '"function"'
    return _function_named(value)


_json_schema_format = _object_with({"json_schema": _object_with({"name": str, "description": str, "schema": dict,
                                                         "strict": bool})}, required=("json_schema",))


def _response_format(value) -> Problem:
    if not isinstance(value, dict):
        return "", "an object"
    kind = value.get("type")
    if kind not in RESPONSE_FORMATS:
        return ".type", f"one of {', '.join(RESPONSE_FORMATS)}"
    if kind == "json_schema":
        return _json_schema_format(value)
    return None


# --- the body -----------------------------------------------------------------------------------

# The checks of the body's fields, looked up for each field the body has (most have a few).
_BODY_FIELDS: dict[str, Check] = {
    "messages": _messages,
    "tools": _tools,
    "tool_choice": _tool_choice,
    "parallel_tool_calls": bool,
    "response_format": _response_format,
    "stream": bool,
    "stream_options": _object_with({"include_usage": bool}),
    "max_tokens": _integer(1, MAX_OUTPUT_TOKENS),
    "max_completion_tokens": _integer(1, MAX_OUTPUT_TOKENS),
    "n": _integer(1, MAX_N),
    "temperature": _number(0, 2),
    "top_p": _number(0, 1),
    "presence_penalty": _number(-2, 2),
    "frequency_penalty": _number(-2, 2),
    "seed": _integer(-(2**63), 2**63 - 1),
    "reasoning_effort": _one_of(REASONING_EFFORTS),
    # (What a Messages call's thinking asks for: to see the thinking, within this budget.)
    THINKING_BUDGET: _integer(0, MAX_OUTPUT_TOKENS),
    "logprobs": bool,
    "top_logprobs": _integer(0, 20),
    "logit_bias": _logit_bias,
    "stop": _stop,
    "user": str,
    "metadata": _metadata,
    "store": bool,
    "tags": _tags,
    "nemo_cache": bool,
}


def _check_nesting(raw: bytes, body: dict) -> None:
    # Counting brackets is cheap and bounds the depth: only a body with that many is encoded
    # (and a body of fewer bytes has fewer).
    if len(raw) <= MAX_NESTING or raw.count(b"[") + raw.count(b"{") <= MAX_NESTING:
        return
    try:
        orjson.dumps(body)
    except orjson.JSONEncodeError as exc:
        raise invalid_request(f"The body is nested more than {MAX_NESTING} levels deep.") from exc


def body_checks(*, built_valid: tuple[str, ...]) -> dict[str, Check]:
    """The checks of a body a dialect built from its own request, but for the fields it built
    valid (from fields of its request it checked, in shapes that pass): those need no second
    look. (A field left out cannot fail, so which error comes first is the same.)"""
    return {name: check for name, check in _BODY_FIELDS.items() if name not in built_valid}


def _check_body(body: dict, checks: dict[str, Check]) -> None:
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise invalid_request("model is required", param="model")
    if body.get("messages") is None:
        raise invalid_request("messages must be a non-empty list", param="messages")
    for name, value in body.items():
        check = checks.get(name)
        if check is not None and value is not None and (problem := _problem(check, value)) is not None:
            where, expected = problem
            raise invalid_request(f"{name}{where} must be {expected}", param=f"{name}{where}")


def _tag_set(raw, header_value: str | None) -> frozenset[str]:
    if raw is None and not header_value:
        # (Most calls: no tags.)
        return frozenset()
    tags = [] if raw is None else [raw] if isinstance(raw, str) else raw
    if header_value:
        tags = [*tags, *header_value.split(",")]
    return frozenset(t.strip() for t in tags if t.strip())


def linked_media_tokens(messages: list[dict]) -> int:
    """What the prompt's images and files change of its bound in bytes. An image costs at most
    what any provider we route to documents for one image: OpenAI's patch-based models, 1,536
    patches times 1.72 (about 2,642 tokens); GPT-4o's high detail takes at most 1,445, Claude
    about 1,600, Gemini 258 to 1,120. So an image named by URL adds that much, and one inlined as
    a data URL counts that much instead of its bytes, when they are more (a photo's base64 is
    hundreds of kilobytes)."""
    count = 0
    for message in messages:
        content = message.get("content")
        if isinstance(content, list):
            for part in content:
                kind = part.get("type")
                if kind == "image_url":
                    image = part["image_url"]
                    url = image if isinstance(image, str) else image.get("url", "")
                    if not url.startswith("data:"):
                        count += LINKED_IMAGE_TOKENS
                    elif len(url) > LINKED_IMAGE_TOKENS:
                        count -= len(url.encode()) - LINKED_IMAGE_TOKENS
                elif kind == "file" and "file_data" not in part["file"]:
                    # A file uploaded before (``file_id``): nothing here bounds it but the
                    # model's context window (the pipeline's bound).
                    count += LINKED_FILE_TOKENS
    return count


def parse_chat_request(raw: bytes, *, tags_header: str | None, request_class: type[R] = ChatRequest) -> R:
    return chat_request(json_object(raw), raw=raw, tags_header=tags_header, request_class=request_class)


def chat_request(body: dict, *, raw: bytes, tags_header: str | None, linked_media: bool | None = None,
                 request_class: type[R] = ChatRequest, checks: dict[str, Check] = _BODY_FIELDS) -> R:
    """A Chat Completions body, checked, as a ``request_class`` (a dialect's subclass, whose own
    fields keep their defaults). ``raw``: the client's bytes it came from, which bound its prompt
    and its nesting (a dialect that built ``body`` from its own request passes that request's,
    and ``linked_media=True``: its images and files are not named as Chat names them; and the
    ``checks`` of the fields it did not build valid: ``body_checks``)."""
    _check_body(body, checks)
    _check_nesting(raw, body)
    stream_options = body.get("stream_options")
    upstream_body = body
    if "tags" in body or "nemo_cache" in body:
        upstream_body = {k: v for k, v in body.items() if k not in NEMO_FIELDS}
    if linked_media is None:
        linked_media = b"image_url" in raw or b"file_id" in raw
    # (The fields in their order, not by keyword: half what a call with nine keywords costs.)
    return request_class(
        upstream_body,  # body
        body["model"],  # model
        body.get("stream") or False,  # stream
        bool(stream_options and stream_options.get("include_usage")),  # include_usage
        body.get("max_completion_tokens") or body.get("max_tokens"),  # max_tokens
        body.get("n") or 1,  # n
        _tag_set(body.get("tags"), tags_header),  # tags
        body.get("nemo_cache"),  # use_cache
        # prompt_bytes: a byte-level tokenizer never makes more tokens than bytes, and the raw
        # body holds the whole prompt (messages and tools), so its size bounds the prompt tokens;
        # but for an image it names by URL, whose tokens its few bytes do not bound.
        len(raw) + (linked_media_tokens(body["messages"]) if linked_media else 0),
    )
