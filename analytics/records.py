"""What the gateway records about a call besides its numbers: the shape of the prompt and the
tool calls the model made. Pure functions of OpenAI-shaped messages, cheap enough for the hot path.

They run on every call, after its answer, to write its log row: whatever a message holds, they
never raise (a value of the wrong type counts as absent), or the call would lose its trail.
"""


def _text(value) -> str:
    return value if isinstance(value, str) else ""


def _text_size(content) -> int:
    if isinstance(content, str):
        return len(content)
    if isinstance(content, list):
        return sum(len(_text(part.get("text"))) for part in content if isinstance(part, dict))
    return 0


def _call(function) -> dict:
    if not isinstance(function, dict):
        return {"name": "", "arguments": ""}
    return {"name": _text(function.get("name")), "arguments": _text(function.get("arguments"))}


def tool_calls_of(message: dict) -> list[dict]:
    """The tool calls of an OpenAI assistant message as ``[{"name", "arguments"}]``.

    Arguments stay the JSON string the model produced: it may not even be valid JSON, and the
    log should show what the model said, not what we could parse.
    """
    calls = message.get("tool_calls")
    found = [_call(call.get("function")) for call in calls if isinstance(call, dict)] if isinstance(calls, list) else []
    legacy = message.get("function_call")
    if isinstance(legacy, dict):
        found.append(_call(legacy))
    return found


def prompt_meta(messages: list[dict]) -> dict:
    """Message count, the role of each message and its size in characters (text and tool calls).

    Kept for every call, so a run can be understood even when the org does not store prompts.
    """
    roles, sizes = [], []
    for message in messages:
        if not isinstance(message, dict):
            message = {}
        size = _text_size(message.get("content"))
        if "tool_calls" in message or "function_call" in message:
            size += sum(len(call["name"]) + len(call["arguments"]) for call in tool_calls_of(message))
        roles.append(_text(message.get("role")))
        sizes.append(size)
    return {"messages": len(messages), "roles": roles, "sizes": sizes}


# A call's labels on its row, at most this many of at most this length: a client's body cannot
# bloat the log. (OpenAI's metadata takes 16 pairs; a Claude Code user_id runs to some 170
# characters.) What goes past is cut, not refused: the call's routing has checked its tags already.
MAX_TAGS = 24
MAX_TAG_LENGTH = 200


def call_tags(tags: frozenset[str], metadata: dict | None) -> list[str] | None:
    """A call's labels as its log row keeps them, to find it by: each routing tag as ``"tag"``,
    each metadata pair as ``"key:value"`` (a value that is not a string counts as absent), sorted
    tags first, at most ``MAX_TAGS`` of at most ``MAX_TAG_LENGTH`` characters, no duplicates;
    None for none (the column's "no tags", which its index leaves out)."""
    if not tags and not metadata:
        return None
    labels = sorted(tags)
    if isinstance(metadata, dict):
        labels += sorted(f"{key}:{value}" for key, value in metadata.items() if isinstance(value, str))
    kept: list[str] = []
    for label in labels:
        label = label[:MAX_TAG_LENGTH]
        if label not in kept:
            kept.append(label)
            if len(kept) == MAX_TAGS:
                break
    return kept or None
