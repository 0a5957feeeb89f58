"""Parsing an Anthropic Messages request (``POST /v1/messages``) into the internal call: anything
malformed is a 400 naming the Messages field, never a 500.

The request is kept twice. As it came (``NativeCall``): a ``vertex_anthropic`` link sends it
upstream in Anthropic's own format, so nothing is lost on the way (``cache_control``, thinking
signatures, tool-use ids, beta features). And as a Chat Completions body (``body``), which every
other provider translates from, and which the limits, the cache and the log read:

- ``system`` (a string or text blocks) is a system message first;
- a user turn's ``text``, ``image`` (base64 or URL) and ``document`` (base64 PDF, plain text)
  blocks are parts of a user message; its ``tool_result`` blocks are ``tool`` messages (before
  the rest of the turn, as Chat Completions wants them right after the calls);
- an assistant turn's ``text`` is its content and its ``tool_use`` blocks its ``tool_calls``;
  a ``thinking`` block another model's link made (its signature the gateway's, carrying Gemini's:
  gateway/providers/thinking.py) is its ``reasoning_content`` and ``reasoning_signature``, which
  brings Gemini its signature back; any other ``thinking`` and ``redacted_thinking`` block is left
  out: its signature is Claude's, which no other model can check, or the gateway's for thinking
  no upstream can take back (Anthropic itself drops a past turn's thinking from the context);
- ``tools`` (custom tools with an ``input_schema``) are function tools, ``tool_choice``
  (``auto``, ``any``, ``tool``, ``none``) the Chat one, ``disable_parallel_tool_use`` the
  ``parallel_tool_calls``; ``thinking`` with its ``budget_tokens`` a ``reasoning_effort``;
  ``stop_sequences`` the ``stop``; ``metadata.user_id`` the ``user``; an enabled ``thinking``'s
  ``budget_tokens`` also the ``thinking_budget``, which asks a link to show its thinking.

The Chat body is then checked by the Chat Completions parser (types and ranges of the fields
they share), but for the fields this parser built valid itself (``_CHAT_CHECKS``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import orjson

from gateway.dialects.chat_completions_request import NEMO_FIELDS, ChatRequest, R, body_checks, chat_request
from gateway.errors import GatewayError, invalid_request
from gateway.http import json_object
from gateway.providers.thinking import THINKING_BUDGET, resumable

# The wire format a provider names to take a Messages call as it came (``Provider.native_wire``).
ANTHROPIC_WIRE = "anthropic"
ROLES = ("user", "assistant")
TOOL_CHOICES = ("auto", "any", "tool", "none")
# The budget_tokens of Claude's thinking, as the effort other models think at.
_EFFORT_BUDGETS = ((4_096, "low"), (16_384, "medium"))
# Fields that ask Anthropic's servers to run something (MCP servers, a code container): only a
# Claude link serves them. (``context_management``, ``service_tier`` and the like only tune how
# Claude serves the call: a translation goes without them.)
_CLAUDE_RUNS = ("mcp_servers", "container")
# Where a document source names what it links to.
_LINKED_SOURCES = {"url": "url", "file": "file_id"}


@dataclass(slots=True)
class NativeCall:
    """The client's request in its own wire format, for a provider that speaks it; and what such
    a provider answered, as its bytes (``answer``), or that it streams (``streamed``), so the
    dialect sends those on unchanged."""

    wire: str
    body: dict
    headers: dict[str, str] = field(default_factory=dict)
    answer: bytes | None = None
    streamed: bool = False
    # What only a provider of this wire format can serve, (reason, param): a link of another
    # refuses the call by name (a server tool such as web_search, which no translation carries).
    only_native: tuple[str, str] | None = None


@dataclass(slots=True)
class MessagesRequest(ChatRequest):
    native: NativeCall | None = None
    # The Message's id: the call's (set by the dialect's ``prepare``), so the row and the answer name each other.
    message_id: str = ""

    @property
    def metadata(self) -> dict | None:
        # Anthropic's metadata (its user_id) becomes the upstream call's ``user``, not its metadata.
        return self.native.body.get("metadata") if self.native is not None else None


@dataclass(slots=True)
class CountTokensRequest(MessagesRequest):
    """``POST /v1/messages/count_tokens``: a count, not an answer; nothing is reserved or charged."""

    has_output = False
    charged = False

    @property
    def method(self) -> str:
        return "count"


def _at(where: str, index: int) -> str:
    return f"{where}[{index}]"


def _text(block: dict, where: str) -> str:
    if not isinstance(block.get("text"), str):
        raise invalid_request(f"{where}.text must be a string", param=f"{where}.text")
    return block["text"]


def _source(block: dict, where: str) -> dict:
    source = block.get("source")
    if not isinstance(source, dict):
        raise invalid_request(f"{where}.source must be an object", param=f"{where}.source")
    return source


def _image_part(block: dict, where: str) -> dict:
    source = _source(block, where)
    kind = source.get("type")
    if kind == "base64" and isinstance(source.get("data"), str) and isinstance(source.get("media_type"), str):
        return {"type": "image_url", "image_url": {"url": f"data:{source['media_type']};base64,{source['data']}"}}
    if kind == "url" and isinstance(source.get("url"), str):
        return {"type": "image_url", "image_url": {"url": source["url"]}}
    raise invalid_request(f"{where}.source must be a base64 source (media_type, data) or a url source",
                          param=f"{where}.source")


def _document_part(block: dict, where: str) -> dict:
    """A document as a Chat part. One named by URL or by a Files API id is a file by id: its
    tokens are bounded by the chain's context window only, and only Claude reads it
    (``_claude_only``: a link of another wire format refuses it by name)."""
    source = _source(block, where)
    kind = source.get("type")
    if kind == "base64" and isinstance(source.get("data"), str) and isinstance(source.get("media_type"), str):
        return {"type": "file", "file": {"file_data": f"data:{source['media_type']};base64,{source['data']}",
                                         "filename": block.get("title") or "document"}}
    if kind == "text" and isinstance(source.get("data"), str):
        return {"type": "text", "text": source["data"]}
    linked = _LINKED_SOURCES.get(kind)
    if linked is not None and isinstance(source.get(linked), str):
        return {"type": "file", "file": {"file_id": source[linked]}}
    raise invalid_request(f"{where}.source must be a base64, text, url or file source", param=f"{where}.source")


def _result_content(block: dict, where: str) -> tuple[str, list[dict]]:
    """A tool result's text, and its images (which a ``tool`` message cannot hold)."""
    content = block.get("content")
    if content is None or isinstance(content, str):
        text = content or ""
        return (f"Error: {text}" if block.get("is_error") else text), []
    if not isinstance(content, list):
        raise invalid_request(f"{where}.content must be a string or a list of blocks", param=f"{where}.content")
    texts, images = [], []
    for index, part in enumerate(content):
        at = f"{where}.content[{index}]"
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text":
            texts.append(_text(part, at))
        elif kind == "image":
            images.append(_image_part(part, at))
        elif kind == "document":
            images.append(_document_part(part, at))
        else:
            raise invalid_request(f"{at}.type must be text, image or document", param=f"{at}.type")
    text = "".join(texts)
    return (f"Error: {text}" if block.get("is_error") else text), images


def _blocks(content, where: str) -> list[dict]:
    if isinstance(content, str):
        return [{"type": "text", "text": content}]
    if not isinstance(content, list):
        raise invalid_request(f"{where} must be a string or a list of content blocks", param=where)
    for index, block in enumerate(content):
        if not isinstance(block, dict) or not isinstance(block.get("type"), str):
            raise invalid_request(f"{_at(where, index)} must be a content block with a type", param=_at(where, index))
    return content


def _user_messages(content, where: str) -> list[dict]:
    """A user turn: its tool results as ``tool`` messages, then the rest as one user message."""
    results: list[dict] = []
    parts: list[dict] = []
    for index, block in enumerate(_blocks(content, where)):
        at = _at(where, index)
        kind = block["type"]
        if kind == "text":
            parts.append({"type": "text", "text": _text(block, at)})
        elif kind == "image":
            parts.append(_image_part(block, at))
        elif kind == "document":
            parts.append(_document_part(block, at))
        elif kind == "tool_result":
            if not isinstance(block.get("tool_use_id"), str) or not block["tool_use_id"]:
                raise invalid_request(f"{at}.tool_use_id must be a non-empty string", param=f"{at}.tool_use_id")
            text, media = _result_content(block, at)
            results.append({"role": "tool", "tool_call_id": block["tool_use_id"], "content": text})
            parts += media
        elif kind in ("thinking", "redacted_thinking"):
            raise invalid_request(f"{at}: a {kind} block belongs to an assistant turn", param=f"{at}.type")
        else:
            raise invalid_request(f"{at}.type {kind!r} is not served: use text, image, document or tool_result",
                                  param=f"{at}.type")
    if not parts:
        return results
    if len(parts) == 1 and parts[0]["type"] == "text":
        return [*results, {"role": "user", "content": parts[0]["text"]}]
    return [*results, {"role": "user", "content": parts}]


def _assistant_message(content, where: str) -> dict:
    texts: list[str] = []
    calls: list[dict] = []
    thinking: dict | None = None
    for index, block in enumerate(_blocks(content, where)):
        at = _at(where, index)
        kind = block["type"]
        if kind == "text":
            texts.append(_text(block, at))
        elif kind == "thinking" and thinking is None and resumable(block.get("signature")):
            thinking = {"reasoning_content": block.get("thinking") if isinstance(block.get("thinking"), str) else "",
                        "reasoning_signature": block["signature"]}
        elif kind == "tool_use":
            for name in ("id", "name"):
                if not isinstance(block.get(name), str) or not block[name]:
                    raise invalid_request(f"{at}.{name} must be a non-empty string", param=f"{at}.{name}")
            if not isinstance(block.get("input", {}), dict):
                raise invalid_request(f"{at}.input must be an object", param=f"{at}.input")
            arguments = orjson.dumps(block.get("input") or {}).decode()
            calls.append({"id": block["id"], "type": "function",
                          "function": {"name": block["name"], "arguments": arguments}})
        elif kind in ("thinking", "redacted_thinking"):
            continue
        else:
            raise invalid_request(f"{at}.type {kind!r} is not served in an assistant turn: use text, tool_use, "
                                  "thinking or redacted_thinking", param=f"{at}.type")
    message: dict = {"role": "assistant", "content": "".join(texts) or None}
    if calls:
        message["tool_calls"] = calls
    if thinking is not None:
        message.update(thinking)
    return message


def chat_messages(body: dict) -> list[dict]:
    """The system prompt and the turns as Chat Completions messages."""
    messages: list[dict] = []
    system = body.get("system")
    if system is not None:
        if isinstance(system, str):
            text = system
        elif isinstance(system, list):
            text = "\n".join(_text(block if isinstance(block, dict) else {}, _at("system", index))
                             for index, block in enumerate(system))
        else:
            raise invalid_request("system must be a string or a list of text blocks", param="system")
        if text:
            messages.append({"role": "system", "content": text})
    turns = body.get("messages")
    if not isinstance(turns, list) or not turns:
        raise invalid_request("messages must be a non-empty list", param="messages")
    for index, turn in enumerate(turns):
        role = turn.get("role") if isinstance(turn, dict) else None
        if role not in ROLES:
            raise invalid_request(f"messages[{index}].role must be user or assistant", param=f"messages[{index}].role")
        content = turn.get("content")
        if content is None:
            raise invalid_request(f"messages[{index}].content is required", param=f"messages[{index}].content")
        if role == "user" and isinstance(content, str):
            # The usual turn, a user's text: the message ``_user_messages`` makes of it.
            messages.append({"role": "user", "content": content})
        elif role == "user":
            messages += _user_messages(content, f"messages[{index}].content")
        else:
            messages.append(_assistant_message(content, f"messages[{index}].content"))
    return messages


def _tools(tools) -> list[dict]:
    if not isinstance(tools, list):
        raise invalid_request("tools must be a list", param="tools")
    functions = []
    for index, tool in enumerate(tools):
        at = _at("tools", index)
        if not isinstance(tool, dict):
            raise invalid_request(f"{at} must be an object", param=at)
        if tool.get("type") not in (None, "custom"):
            # A server tool: for Claude's own servers (``_claude_only``), never in the Chat call.
            continue
        if not isinstance(tool.get("name"), str) or not tool["name"]:
            raise invalid_request(f"{at}.name must be a non-empty string", param=f"{at}.name")
        if not isinstance(tool.get("input_schema"), dict):
            raise invalid_request(f"{at}.input_schema must be an object (a JSON Schema)", param=f"{at}.input_schema")
        function = {"name": tool["name"], "parameters": tool["input_schema"]}
        if isinstance(tool.get("description"), str):
            function["description"] = tool["description"]
        functions.append({"type": "function", "function": function})
    return functions


def _claude_only(body: dict) -> tuple[str, str] | None:
    """What of the request only Claude serves, (reason, param): MCP servers or a container, a
    server tool (``web_search_…``, ``bash_…``), which Anthropic runs, or a document by URL or file
    id, which Anthropic fetches."""
    for name in _CLAUDE_RUNS:
        if body.get(name):
            return f"{name} is run by Claude's servers only", name
    tools = body.get("tools")
    if isinstance(tools, list):
        for index, tool in enumerate(tools):
            if isinstance(tool, dict) and tool.get("type") not in (None, "custom"):
                return f"the server tool {tool['type']!r} (tools[{index}]) runs on Claude only", f"tools[{index}].type"
    # (The turns were checked: ``chat_messages`` ran.)
    for turn_index, turn in enumerate(body["messages"]):
        content = turn["content"]
        if not isinstance(content, list):
            continue
        for index, block in enumerate(content):
            source = block.get("source") if block["type"] == "document" else None
            if isinstance(source, dict) and source.get("type") in _LINKED_SOURCES:
                where = f"messages[{turn_index}].content[{index}]"
                return f"a document by {source['type']} ({where}) is read by Claude only", f"{where}.source"
    return None


def _tool_choice(choice) -> tuple[str | dict, bool]:
    """The Chat tool_choice, and whether parallel tool calls stay allowed."""
    kind = choice.get("type") if isinstance(choice, dict) else None
    if kind not in TOOL_CHOICES:
        raise invalid_request(f"tool_choice.type must be one of {', '.join(TOOL_CHOICES)}", param="tool_choice.type")
    parallel = choice.get("disable_parallel_tool_use") is not True
    if kind == "tool":
        if not isinstance(choice.get("name"), str) or not choice["name"]:
            raise invalid_request("tool_choice.name must name a tool", param="tool_choice.name")
        return {"type": "function", "function": {"name": choice["name"]}}, parallel
    return {"auto": "auto", "any": "required", "none": "none"}[kind], parallel


def _effort(thinking) -> str | None:
    if not isinstance(thinking, dict) or thinking.get("type") not in ("enabled", "disabled", "adaptive"):
        raise invalid_request("thinking must be {\"type\": \"enabled\", \"budget_tokens\": N} or "
                              "{\"type\": \"disabled\"}", param="thinking")
    if thinking["type"] == "disabled":
        return None
    if thinking["type"] == "adaptive":
        return "medium"
    budget = thinking.get("budget_tokens")
    if not isinstance(budget, int) or isinstance(budget, bool) or budget < 1024:
        raise invalid_request("thinking.budget_tokens must be an integer of at least 1024",
                              param="thinking.budget_tokens")
    return next((effort for most, effort in _EFFORT_BUDGETS if budget <= most), "high")


def _check_top(body: dict) -> None:
    if not isinstance(body.get("model"), str) or not body["model"]:
        raise invalid_request("model is required", param="model")
    max_tokens = body.get("max_tokens")
    if not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 1:
        raise invalid_request("max_tokens is required: a positive integer", param="max_tokens")
    if body.get("stream") is not None and not isinstance(body["stream"], bool):
        raise invalid_request("stream must be a boolean", param="stream")
    stop = body.get("stop_sequences")
    if stop is not None and not (isinstance(stop, list) and all(isinstance(item, str) for item in stop)):
        raise invalid_request("stop_sequences must be a list of strings", param="stop_sequences")
    metadata = body.get("metadata")
    if metadata is not None and not isinstance(metadata, dict):
        raise invalid_request("metadata must be an object", param="metadata")
    for name in ("temperature", "top_p"):
        value = body.get(name)
        if value is not None and (not isinstance(value, int | float) or isinstance(value, bool) or not 0 <= value <= 1):
            raise invalid_request(f"{name} must be a number from 0 to 1", param=name)
    top_k = body.get("top_k")
    if top_k is not None and (not isinstance(top_k, int) or isinstance(top_k, bool) or top_k < 1):
        raise invalid_request("top_k must be a positive integer", param="top_k")


def chat_body(body: dict, *, counting: bool = False) -> dict:
    """The internal call's Chat Completions body."""
    chat: dict = {"model": body.get("model"), "messages": chat_messages(body)}
    if body.get("tools"):
        chat["tools"] = _tools(body["tools"])
    if body.get("tool_choice") is not None:
        tool_choice, parallel = _tool_choice(body["tool_choice"])
        if chat.get("tools"):
            chat["tool_choice"] = tool_choice
            if not parallel:
                chat["parallel_tool_calls"] = False
    if body.get("thinking") is not None and (effort := _effort(body["thinking"])):
        chat["reasoning_effort"] = effort
        if body["thinking"]["type"] == "enabled":
            chat[THINKING_BUDGET] = body["thinking"]["budget_tokens"]
    if counting:
        return chat
    chat["max_tokens"] = body["max_tokens"]
    if body.get("stop_sequences"):
        chat["stop"] = body["stop_sequences"]
    if isinstance((body.get("metadata") or {}).get("user_id"), str):
        chat["user"] = body["metadata"]["user_id"]
    for name in ("temperature", "top_p", "top_k", "stream", *NEMO_FIELDS):
        if (value := body.get(name)) is not None:
            chat[name] = value
    return chat


# What Chat Completions need not check again of the body ``chat_body`` builds: the tools, tool
# choice and effort it makes valid, and fields ``_check_top`` checked (in ranges Chat takes).
# Its messages it checks, unless every turn is text (``_text_turns``), whose messages are valid:
# blocks may make none, or a file named by a document's title, which passes on unchecked.
_BUILT_VALID = ("tools", "tool_choice", "parallel_tool_calls", "reasoning_effort", "temperature", "top_p", "user",
                "stream")
_CHAT_CHECKS = body_checks(built_valid=_BUILT_VALID)
_TEXT_TURNS_CHECKS = body_checks(built_valid=(*_BUILT_VALID, "messages"))


def _text_turns(body: dict) -> bool:
    """Whether every turn of ``body`` (checked by ``chat_messages``) is a string: a conversation
    of text, which makes only messages Chat Completions takes and names no image nor file."""
    return all(isinstance(turn["content"], str) for turn in body["messages"])


def _checked(chat: dict, raw: bytes, tags_header: str | None, request_class: type[R], text_turns: bool) -> R:
    """The Chat call checked as Chat Completions checks its own, without encoding it: the client's
    bytes bound its prompt (what goes to Claude is those bytes; a translation carries their text),
    and its images and files, which are not named as Chat names them, are looked for in its
    messages (unless it has none: ``text_turns``). Built as the dialect's ``request_class`` at
    once, not copied from a ChatRequest."""
    try:
        return chat_request(chat, raw=raw, tags_header=tags_header, linked_media=not text_turns,
                            request_class=request_class, checks=_TEXT_TURNS_CHECKS if text_turns else _CHAT_CHECKS)
    except GatewayError as error:
        if error.param and error.param.startswith("stop"):
            error.param = "stop_sequences"
        raise


def _native(body: dict, beta: str | None) -> NativeCall:
    upstream = body
    if "tags" in body or "nemo_cache" in body:
        upstream = {name: value for name, value in body.items() if name not in NEMO_FIELDS}
    return NativeCall(wire=ANTHROPIC_WIRE, body=upstream, headers={"anthropic-beta": beta} if beta else {},
                      only_native=_claude_only(body))


def parse_messages_request(raw: bytes, *, tags_header: str | None, beta: str | None) -> MessagesRequest:
    body = json_object(raw)
    _check_top(body)
    chat = chat_body(body)
    request = _checked(chat, raw, tags_header, MessagesRequest, _text_turns(body))
    request.native = _native(body, beta)
    return request


def parse_count_tokens_request(raw: bytes, *, tags_header: str | None, beta: str | None) -> CountTokensRequest:
    body = json_object(raw)
    if not isinstance(body.get("model"), str) or not body["model"]:
        raise invalid_request("model is required", param="model")
    chat = chat_body(body, counting=True)
    request = _checked(chat, raw, tags_header, CountTokensRequest, _text_turns(body))
    request.stream = False
    request.native = _native(body, beta)
    return request
