"""Parsing a Responses API request (``POST /v1/responses``) into the internal call, a Chat
Completions body: anything malformed is a 400 naming the Responses field, never a 500.

``input`` (a string or items) becomes ``messages``: ``message`` items (``input_text`` /
``output_text`` / ``input_image`` / ``input_file`` parts, or a string), ``function_call`` items
an assistant message's ``tool_calls`` (consecutive calls in one message, as Chat Completions
has them), ``function_call_output`` items ``tool`` messages. ``reasoning`` items a client passes
back are accepted and left out: Chat Completions, the form every provider translates from, has
no place for them. ``instructions`` is a system message first. Flat function tools become Chat
tools; a built-in tool type the gateway does not serve is a 400 naming it. The Chat body is then
checked by the Chat Completions parser (types and ranges of the fields they share), but for the
fields this parser built valid itself (``_CHAT_CHECKS``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import orjson

from gateway.dialects.chat_completions_request import (
    NEMO_FIELDS,
    ChatRequest,
    R,
    body_checks,
    chat_request,
    linked_media_tokens,
)
from gateway.errors import GatewayError, invalid_request
from gateway.http import json_object

# Fields of a Responses request that carry nothing a Chat Completions upstream could use, or
# that only the Responses API's own servers act on: accepted and left out of the call.
# (``background``, ``conversation``, ``prompt`` and ``top_logprobs`` are refused by name: the
# gateway cannot do what they ask.)
IGNORED = ("include", "truncation", "service_tier", "safety_identifier", "prompt_cache_key",
           "prompt_cache_retention", "stream_options", "max_tool_calls")
ROLES = ("user", "assistant", "system", "developer")
TOOL_CHOICES = ("none", "auto", "required")


@dataclass(slots=True)
class ResponsesRequest(ChatRequest):
    # The client's body, whose fields the Response object repeats (instructions, tools, text, ...:
    # ``response_echo``, made once, when the Response is).
    echoed: dict | None = None
    store: bool = True
    previous_response_id: str | None = None
    # This request's own input, as Responses items (what ``input_items`` lists).
    input_items: list = field(default_factory=list)
    # The conversation without the instructions: what a later ``previous_response_id`` continues.
    conversation: list = field(default_factory=list)
    instructions: str | None = None

    # Set by the dialect's ``prepare`` once the call is known.
    response_id: str = ""
    org_id: int = 0
    # Where the answer is stored (the worker's ``responses_store.StoredResponses``).
    stored_responses: object = None
    # The stored conversation prepended (``previous_response_id``).
    history: list = field(default_factory=list)

    @property
    def metadata(self) -> dict | None:
        # The Responses API's metadata is not sent upstream: it is in the echo.
        return None if self.echoed is None else self.echoed.get("metadata") or {}


def _text_of(parts, where: str) -> str:
    if isinstance(parts, str):
        return parts
    if not isinstance(parts, list):
        raise invalid_request(f"{where} must be a string or a list of parts", param=where)
    texts = []
    for index, part in enumerate(parts):
        if not isinstance(part, dict) or not isinstance(part.get("text", ""), str):
            raise invalid_request(f"{where}[{index}] must be a text part", param=f"{where}[{index}]")
        texts.append(part.get("text") or part.get("refusal") or "")
    return "".join(texts)


def _chat_part(part, where: str) -> dict:
    if not isinstance(part, dict):
        raise invalid_request(f"{where} must be an object", param=where)
    kind = part.get("type")
    if kind in ("input_text", "output_text", "text", "summary_text"):
        if not isinstance(part.get("text"), str):
            raise invalid_request(f"{where}.text must be a string", param=f"{where}.text")
        return {"type": "text", "text": part["text"]}
    if kind == "refusal":
        return {"type": "text", "text": str(part.get("refusal") or "")}
    if kind == "input_image":
        url = part.get("image_url")
        if not isinstance(url, str):
            raise invalid_request(f"{where}.image_url must be a URL or a data URL (file ids are not served)",
                                  param=f"{where}.image_url")
        image = {"url": url}
        if isinstance(part.get("detail"), str):
            image["detail"] = part["detail"]
        return {"type": "image_url", "image_url": image}
    if kind == "input_file":
        file = {name: part[name] for name in ("file_data", "file_id", "filename") if isinstance(part.get(name), str)}
        if not file:
            raise invalid_request(f"{where} must have file_data, file_id or filename", param=where)
        return {"type": "file", "file": file}
    raise invalid_request(f"{where}.type must be one of input_text, output_text, input_image, input_file",
                          param=f"{where}.type")


def _message(item: dict, where: str) -> dict:
    role = item.get("role")
    if role not in ROLES:
        raise invalid_request(f"{where}.role must be one of {', '.join(ROLES)}", param=f"{where}.role")
    content = item.get("content")
    if isinstance(content, str):
        return {"role": role, "content": content}
    if not isinstance(content, list):
        raise invalid_request(f"{where}.content must be a string or a list of parts", param=f"{where}.content")
    if role == "assistant":
        # An assistant message of Chat Completions takes text only.
        return {"role": role, "content": _text_of(content, f"{where}.content")}
    return {"role": role, "content": [_chat_part(part, f"{where}.content[{index}]")
                                      for index, part in enumerate(content)]}


def _function_call(item: dict, where: str) -> dict:
    for name in ("call_id", "name"):
        if not isinstance(item.get(name), str) or not item[name]:
            raise invalid_request(f"{where}.{name} must be a non-empty string", param=f"{where}.{name}")
    arguments = item.get("arguments", "")
    if not isinstance(arguments, str):
        raise invalid_request(f"{where}.arguments must be a string (of JSON)", param=f"{where}.arguments")
    return {"id": item["call_id"], "type": "function", "function": {"name": item["name"], "arguments": arguments}}


def _function_output(item: dict, where: str) -> dict:
    if not isinstance(item.get("call_id"), str) or not item["call_id"]:
        raise invalid_request(f"{where}.call_id must be a non-empty string", param=f"{where}.call_id")
    output = item.get("output")
    if output is None:
        raise invalid_request(f"{where}.output must be a string", param=f"{where}.output")
    text = output if isinstance(output, str) else _text_of(output, f"{where}.output")
    return {"role": "tool", "tool_call_id": item["call_id"], "content": text}


def input_messages(items, where: str = "input") -> list[dict]:
    """Responses input items as Chat Completions messages."""
    if isinstance(items, str):
        return [{"role": "user", "content": items}]
    if not isinstance(items, list):
        raise invalid_request(f"{where} must be a string or a list of items", param=where)
    messages: list[dict] = []
    for index, item in enumerate(items):
        at = f"{where}[{index}]"
        if not isinstance(item, dict):
            raise invalid_request(f"{at} must be an object", param=at)
        kind = item.get("type", "message")
        if kind == "message":
            messages.append(_message(item, at))
        elif kind == "function_call":
            call = _function_call(item, at)
            last = messages[-1] if messages else None
            if last is not None and last["role"] == "assistant" and not isinstance(last.get("content"), list):
                last.setdefault("tool_calls", []).append(call)
            else:
                messages.append({"role": "assistant", "content": None, "tool_calls": [call]})
        elif kind == "function_call_output":
            messages.append(_function_output(item, at))
        elif kind == "reasoning":
            continue
        else:
            raise invalid_request(f"{at}.type {kind!r} is not served: use message, function_call, "
                                  "function_call_output or reasoning items", param=f"{at}.type")
    return messages


def _tools(tools) -> list[dict]:
    if not isinstance(tools, list):
        raise invalid_request("tools must be a list", param="tools")
    chat_tools = []
    for index, tool in enumerate(tools):
        at = f"tools[{index}]"
        if not isinstance(tool, dict):
            raise invalid_request(f"{at} must be an object", param=at)
        kind = tool.get("type")
        if kind != "function":
            raise invalid_request(f"The tool type {kind!r} ({at}) is not served by this gateway: only function "
                                  "tools are.", param=f"{at}.type")
        if not isinstance(tool.get("name"), str) or not tool["name"]:
            raise invalid_request(f"{at}.name must be a non-empty string", param=f"{at}.name")
        function = {"name": tool["name"]}
        for name in ("description", "parameters", "strict"):
            if tool.get(name) is not None:
                function[name] = tool[name]
        chat_tools.append({"type": "function", "function": function})
    return chat_tools


def _tool_choice(choice):
    if isinstance(choice, str):
        if choice not in TOOL_CHOICES:
            raise invalid_request(f"tool_choice must be one of {', '.join(TOOL_CHOICES)} or a function",
                                  param="tool_choice")
        return choice
    if isinstance(choice, dict) and choice.get("type") == "function" and isinstance(choice.get("name"), str):
        return {"type": "function", "function": {"name": choice["name"]}}
    kind = choice.get("type") if isinstance(choice, dict) else None
    raise invalid_request(f"tool_choice {kind or choice!r} is not served: use none, auto, required or "
                          '{"type": "function", "name": ...}', param="tool_choice")


def _response_format(text) -> dict | None:
    if not isinstance(text, dict):
        raise invalid_request("text must be an object", param="text")
    fmt = text.get("format")
    if fmt is None:
        return None
    if not isinstance(fmt, dict):
        raise invalid_request("text.format must be an object", param="text.format")
    kind = fmt.get("type")
    if kind == "text":
        return None
    if kind == "json_object":
        return {"type": "json_object"}
    if kind == "json_schema":
        if not isinstance(fmt.get("name"), str) or not isinstance(fmt.get("schema"), dict):
            raise invalid_request("text.format of type json_schema needs a name and a schema", param="text.format")
        schema = {name: fmt[name] for name in ("name", "schema", "description", "strict") if fmt.get(name) is not None}
        return {"type": "json_schema", "json_schema": schema}
    raise invalid_request("text.format.type must be one of text, json_object, json_schema", param="text.format.type")


# A Response's keys in OpenAI's order, with the values no request changes (``response_echo``
# sets the others). Copied, not built: a dict of this many keys built key by key grows three times.
_RESPONSE = {
    "id": None, "object": "response", "created_at": None, "status": None, "background": False, "completed_at": None,
    "error": None, "incomplete_details": None, "instructions": None, "max_output_tokens": None,
    "max_tool_calls": None, "model": None, "output": None, "parallel_tool_calls": None,
    "previous_response_id": None, "reasoning": None, "service_tier": "default", "store": None, "temperature": None,
    "text": None, "tool_choice": None, "tools": None, "top_p": None, "truncation": None, "usage": None,
    "user": None, "metadata": None,
}


def response_echo(body: dict) -> dict:
    """The Response object as it repeats its request, as OpenAI's does: all of its keys in OpenAI's
    order, the request's fields among them, and what only the answer says (its id, status,
    model, output, usage, ...) left for ``response_object`` to fill in. A Response is a copy of
    it, so its keys keep their order without being built again."""
    text = body.get("text") if isinstance(body.get("text"), dict) else {}
    reasoning = body.get("reasoning") or {}
    echo = _RESPONSE.copy()
    echo["instructions"] = body.get("instructions")
    echo["max_output_tokens"] = body.get("max_output_tokens")
    echo["parallel_tool_calls"] = body.get("parallel_tool_calls", True)
    echo["previous_response_id"] = body.get("previous_response_id")
    echo["reasoning"] = {"effort": reasoning.get("effort"), "summary": reasoning.get("summary")}
    echo["store"] = body.get("store", True) is not False
    echo["temperature"] = body.get("temperature", 1.0)
    echo["text"] = {"format": text.get("format") or {"type": "text"}, "verbosity": text.get("verbosity") or "medium"}
    echo["tool_choice"] = body.get("tool_choice", "auto")
    echo["tools"] = body.get("tools") or []
    echo["top_p"] = body.get("top_p", 1.0)
    echo["truncation"] = body.get("truncation") or "disabled"
    echo["user"] = body.get("user")
    echo["metadata"] = body.get("metadata") or {}
    return echo


def _check_top(body: dict) -> None:
    for name in ("instructions", "previous_response_id", "user"):
        if (value := body.get(name)) is not None and not isinstance(value, str):
            raise invalid_request(f"{name} must be a string", param=name)
    for name in ("store", "stream", "parallel_tool_calls"):
        if (value := body.get(name)) is not None and not isinstance(value, bool):
            raise invalid_request(f"{name} must be a boolean", param=name)
    metadata = body.get("metadata")
    if metadata is not None and not (isinstance(metadata, dict) and all(isinstance(v, str) for v in metadata.values())):
        raise invalid_request("metadata must be an object of strings", param="metadata")
    if body.get("background"):
        raise invalid_request("background responses are not served by this gateway", param="background")
    if body.get("prompt") is not None:
        raise invalid_request("prompt (a stored prompt template) is not served by this gateway: send the "
                              "instructions and input themselves", param="prompt")
    if body.get("top_logprobs"):
        raise invalid_request("top_logprobs is not served on /v1/responses by this gateway", param="top_logprobs")
    if body.get("conversation") is not None:
        raise invalid_request("conversation is not served by this gateway: use previous_response_id",
                              param="conversation")
    reasoning = body.get("reasoning")
    if reasoning is not None and (not isinstance(reasoning, dict)
                                  or not isinstance(reasoning.get("effort") or "", str)):
        raise invalid_request("reasoning must be an object with an effort", param="reasoning")
    if body.get("input") is None:
        raise invalid_request("input is required", param="input")


# What Chat Completions need not check again of the body ``chat_body`` builds: its messages
# (``input_messages`` makes only messages it takes), its tool choice (``_tool_choice``'s), and
# fields ``_check_top`` checked.
_CHAT_CHECKS = body_checks(built_valid=("messages", "tool_choice", "parallel_tool_calls", "stream", "user"))


def chat_body(body: dict, messages: list[dict]) -> dict:
    """The internal call's body: everything of the request but its messages."""
    chat: dict = {"model": body.get("model"), "messages": messages}
    if body.get("tools"):
        chat["tools"] = _tools(body["tools"])
    if body.get("tool_choice") is not None:
        tool_choice = _tool_choice(body["tool_choice"])
        # Chat Completions refuses a tool_choice without tools; "auto" without tools says nothing.
        if chat.get("tools"):
            chat["tool_choice"] = tool_choice
    if body.get("parallel_tool_calls") is not None and chat.get("tools"):
        chat["parallel_tool_calls"] = body["parallel_tool_calls"]
    if body.get("text") is not None and (response_format := _response_format(body["text"])) is not None:
        chat["response_format"] = response_format
    if body.get("max_output_tokens") is not None:
        chat["max_completion_tokens"] = body["max_output_tokens"]
    if (effort := (body.get("reasoning") or {}).get("effort")) is not None:
        chat["reasoning_effort"] = effort
    for name in ("temperature", "top_p", "user", "stream", *NEMO_FIELDS):
        if (value := body.get(name)) is not None:
            chat[name] = value
    return chat


def _rename(error: GatewayError) -> GatewayError:
    """The Chat Completions parser's names of the fields the two APIs call differently."""
    renames = {"max_completion_tokens": "max_output_tokens", "response_format": "text.format",
               "reasoning_effort": "reasoning.effort"}
    for chat_name, name in renames.items():
        if error.param and error.param.startswith(chat_name):
            error.param = name + error.param[len(chat_name):]
            error.message = error.message.replace(chat_name, name, 1)
    return error


def build_chat_request(body: dict, messages: list[dict], *, tags_header: str | None,
                       request_class: type[R] = ChatRequest) -> R:
    chat = chat_body(body, messages)
    # (An input that is a string names no image nor file: its encoding need not be searched for one.)
    linked_media = None if isinstance(body["input"], list) else False
    try:
        # Its encoding bounds the prompt (as a Chat client's body would); it need not be read back.
        return chat_request(chat, raw=orjson.dumps(chat), tags_header=tags_header, linked_media=linked_media,
                            request_class=request_class, checks=_CHAT_CHECKS)
    except GatewayError as error:
        raise _rename(error) from None


def parse_responses_request(raw: bytes, *, tags_header: str | None) -> ResponsesRequest:
    body = json_object(raw)
    if not isinstance(body.get("model"), str) or not body["model"]:
        raise invalid_request("model is required", param="model")
    _check_top(body)
    conversation = input_messages(body["input"])
    instructions = body.get("instructions") or None
    messages = ([{"role": "system", "content": instructions}] if instructions else []) + conversation
    if not messages:
        raise invalid_request("input must hold at least one message", param="input")
    request = build_chat_request(body, messages, tags_header=tags_header, request_class=ResponsesRequest)
    items = body["input"]
    if isinstance(items, str):
        items = [{"type": "message", "role": "user", "content": [{"type": "input_text", "text": items}]}]
    request.echoed = body
    request.store = body.get("store", True) is not False
    request.previous_response_id = body.get("previous_response_id")
    request.input_items = items
    request.conversation = conversation
    request.instructions = instructions
    return request


def continued(request: ResponsesRequest, history: list[dict]) -> None:
    """Prepends a stored conversation (``previous_response_id``) to the request's messages: the
    whole of it is sent again, and billed as prompt, as OpenAI does."""
    request.history = history
    system = [{"role": "system", "content": request.instructions}] if request.instructions else []
    request.body = {**request.body, "messages": [*system, *history, *request.conversation]}
    request.prompt_bytes = len(orjson.dumps(request.body)) + linked_media_tokens(request.body["messages"])
