"""Small pure helpers that shape a call's facts for its request-log row."""


def _size(content) -> int:
    if isinstance(content, str):
        return len(content)
    if isinstance(content, list):
        return sum(len(part.get("text") or "") for part in content if isinstance(part, dict))
    return 0


def prompt_meta(messages: list[dict]) -> dict:
    """What the prompt looked like without storing it: count, roles and sizes in characters."""
    return {
        "messages": len(messages),
        "roles": [m.get("role", "") for m in messages],
        "sizes": [_size(m.get("content")) for m in messages],
    }


def tool_calls_of(message: dict) -> list[dict]:
    """``[{"name", "arguments"}]`` of an OpenAI assistant message."""
    functions = [call.get("function") or {} for call in message.get("tool_calls") or []]
    return [{"name": f.get("name", ""), "arguments": f.get("arguments", "")} for f in functions]
