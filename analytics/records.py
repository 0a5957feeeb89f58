"""What the gateway records about a call besides its numbers: the shape of the prompt and the
tool calls the model made. Pure functions of OpenAI-shaped messages, cheap enough for the hot path.
"""


def _text_size(content) -> int:
    if isinstance(content, str):
        return len(content)
    if isinstance(content, list):
        return sum(len(part.get("text") or "") for part in content if isinstance(part, dict))
    return 0


def tool_calls_of(message: dict) -> list[dict]:
    """The tool calls of an OpenAI assistant message as ``[{"name", "arguments"}]``.

    Arguments stay the JSON string the model produced: it may not even be valid JSON, and the
    log should show what the model said, not what we could parse.
    """
    functions = [call.get("function") or {} for call in message.get("tool_calls") or [] if isinstance(call, dict)]
    found = [{"name": function.get("name", ""), "arguments": function.get("arguments", "")} for function in functions]
    legacy = message.get("function_call")
    if isinstance(legacy, dict):
        found.append({"name": legacy.get("name", ""), "arguments": legacy.get("arguments", "")})
    return found


def prompt_meta(messages: list[dict]) -> dict:
    """Message count, the role of each message and its size in characters (text and tool calls).

    Kept for every call, so a run can be understood even when the org does not store prompts.
    """
    sizes = []
    for message in messages:
        size = _text_size(message.get("content"))
        size += sum(len(call["name"]) + len(call["arguments"] or "") for call in tool_calls_of(message))
        sizes.append(size)
    return {
        "messages": len(messages),
        "roles": [message.get("role", "") for message in messages],
        "sizes": sizes,
    }
