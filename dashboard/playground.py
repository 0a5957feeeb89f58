"""What the playground and a key's test call need from the server: the chat models each key
may use, and a stored call's request when it can be sent again from the playground.

The calls themselves never pass through here. A key's secret is stored only as a hash, so the
dashboard cannot call the gateway as a key: the browser does, with the secret its user pasted
(or the one the Key issued page shows once), straight to the gateway's path of the client API
chosen (``PLAYGROUND_APIS``). The call is any client's call, with the same authentication,
limits, budgets, routing and log.
"""

import json

from analytics.models import RequestLog
from billing.selectors import catalog_list
from dashboard.forms import model_choices
from keys.models import VirtualKey

# The client APIs the playground speaks (a log row's endpoint, with its label and its path on the
# gateway); a stored call of another one (embeddings) is not opened in it.
PLAYGROUND_APIS = {
    "chat.completions": ("Chat Completions", "/v1/chat/completions"),
    "responses": ("Responses", "/v1/responses"),
    "messages": ("Messages (Anthropic)", "/v1/messages"),
}
PLAYGROUND_DEFAULT_API = "chat.completions"
# The field each API's conversation is in: a stored body without it cannot be edited as one.
_CONVERSATION = {"chat.completions": ("messages", (list,)), "responses": ("input", (list, str)),
                 "messages": ("messages", (list,))}
# The model a key's snippets and its test call name, when the key may use it.
SNIPPET_MODEL = "gemini-2.5-flash"


def chat_models(keys: list[VirtualKey]) -> dict[int, list[str]]:
    """Each key's chat models: the names the routing file serves that the key may use, without
    the embedding models (the playground and a key's test make chat calls)."""
    embedding = {model.name for model in catalog_list() if "embeddings" in model.capabilities}
    served = [name for name, _ in model_choices() if name not in embedding]
    return {key.pk: [name for name in served if not key.allowed_models or name in key.allowed_models]
            for key in keys}


def key_test_model(key: VirtualKey) -> str | None:
    """The model a key's test call and its snippets use: SNIPPET_MODEL if the key may use it, else
    the first chat model it may use."""
    models = chat_models([key])[key.pk]
    return SNIPPET_MODEL if SNIPPET_MODEL in models else next(iter(models), None)


def playground_request(row: RequestLog) -> dict | None:
    """The stored request of a call of one of the playground's APIs (``row.endpoint``), in that
    API's shape, to load into the playground; None for a call of another API or one whose body
    was not stored."""
    if row.endpoint not in PLAYGROUND_APIS or not isinstance(row.request_body, dict):
        return None
    body = client_request(row.endpoint, row.request_body)
    field, kinds = _CONVERSATION[row.endpoint]
    return body if isinstance(body.get(field), kinds) else None


def client_request(endpoint: str, body: dict) -> dict:
    """A stored request in its client API's shape. The log keeps what went upstream, which for
    a Responses or a Messages call is the Chat Completions request the gateway made of it: it is
    written back as that API's request (a body in the API's own shape is left as it is)."""
    if endpoint == "responses" and "input" not in body and isinstance(body.get("messages"), list):
        return _as_responses(body)
    if endpoint == "messages" and isinstance(body.get("messages"), list):
        return _as_messages(body)
    return body


def _leading_system(messages: list) -> tuple[str | None, list]:
    """The system prompt the gateway put first (Responses' instructions, Messages' system)."""
    if messages and isinstance(messages[0], dict) and messages[0].get("role") in ("system", "developer") \
            and isinstance(messages[0].get("content"), str):
        return messages[0]["content"], messages[1:]
    return None, messages


def _renamed(body: dict, names: dict, dropped: tuple[str, ...]) -> dict:
    """The body in its key order, fields renamed and the upstream's own dropped."""
    return {names.get(name, name): value for name, value in body.items() if name not in dropped}


def _as_responses(body: dict) -> dict:
    instructions, messages = _leading_system(body["messages"])
    items = []
    for message in messages:
        if not isinstance(message, dict):
            continue
        if message.get("role") == "tool":
            items.append({"type": "function_call_output", "call_id": message.get("tool_call_id", ""),
                          "output": message.get("content") or ""})
            continue
        if message.get("content") not in (None, ""):
            items.append({"role": message.get("role", "user"), "content": message["content"]})
        items += [{"type": "function_call", "call_id": call.get("id", ""), "name": call["function"].get("name", ""),
                   "arguments": call["function"].get("arguments", "")}
                  for call in message.get("tool_calls") or [] if isinstance(call, dict) and "function" in call]
    rebuilt = _renamed(body, {"messages": "input", "max_completion_tokens": "max_output_tokens",
                              "max_tokens": "max_output_tokens"}, ("stream_options",))
    rebuilt["input"] = items
    if instructions is not None:
        rebuilt = {"instructions": instructions, **rebuilt}
    if isinstance(rebuilt.get("tools"), list):
        rebuilt["tools"] = [{"type": "function", **tool["function"]} if isinstance(tool, dict) and "function" in tool
                            else tool for tool in rebuilt["tools"]]
    return rebuilt


_MESSAGES_TOOL_CHOICES = {"auto": {"type": "auto"}, "required": {"type": "any"}, "none": {"type": "none"}}


def _as_messages(body: dict) -> dict:
    system, messages = _leading_system(body["messages"])
    turns: list[dict] = []
    for message in messages:
        if not isinstance(message, dict):
            continue
        if message.get("role") == "tool":
            result = {"type": "tool_result", "tool_use_id": message.get("tool_call_id", ""),
                      "content": message.get("content") or ""}
            if turns and turns[-1]["role"] == "user" and isinstance(turns[-1]["content"], list):
                turns[-1]["content"].append(result)
            else:
                turns.append({"role": "user", "content": [result]})
            continue
        calls = [call for call in message.get("tool_calls") or [] if isinstance(call, dict) and "function" in call]
        if not calls:
            turns.append({name: value for name, value in message.items()})
            continue
        blocks = [{"type": "text", "text": message["content"]}] if message.get("content") else []
        blocks += [{"type": "tool_use", "id": call.get("id", ""), "name": call["function"].get("name", ""),
                    "input": _arguments(call["function"].get("arguments"))} for call in calls]
        turns.append({"role": "assistant", "content": blocks})
    rebuilt = _renamed(body, {"max_completion_tokens": "max_tokens", "stop": "stop_sequences"}, ("stream_options",))
    rebuilt["messages"] = turns
    if system is not None:
        rebuilt = {"system": system, **rebuilt}
    if isinstance(rebuilt.get("tools"), list):
        rebuilt["tools"] = [_messages_tool(tool) for tool in rebuilt["tools"]]
    choice = rebuilt.get("tool_choice")
    if isinstance(choice, str) and choice in _MESSAGES_TOOL_CHOICES:
        rebuilt["tool_choice"] = _MESSAGES_TOOL_CHOICES[choice]
    elif isinstance(choice, dict) and isinstance(choice.get("function"), dict):
        rebuilt["tool_choice"] = {"type": "tool", "name": choice["function"].get("name", "")}
    return rebuilt


def _messages_tool(tool):
    if not isinstance(tool, dict) or not isinstance(tool.get("function"), dict):
        return tool
    function = tool["function"]
    made = {"name": function.get("name", ""), "description": function.get("description")}
    made = {name: value for name, value in made.items() if value is not None}
    return {**made, "input_schema": function.get("parameters") or {"type": "object"}}


def _arguments(arguments) -> dict:
    """A tool call's arguments, a JSON text upstream, as the object Anthropic's tool_use holds."""
    if isinstance(arguments, dict):
        return arguments
    try:
        parsed = json.loads(arguments or "{}")
    except (TypeError, ValueError):
        return {"arguments": arguments}
    return parsed if isinstance(parsed, dict) else {"arguments": parsed}
