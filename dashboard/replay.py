"""A stored call read back: its conversation as chat turns, and the same request as a curl
command or a Python snippet to send it again."""

import json
import shlex
from dataclasses import dataclass, field

# The client API a row was served by, and the path that serves it.
ENDPOINT_PATHS = {"chat.completions": "/v1/chat/completions", "responses": "/v1/responses",
                  "embeddings": "/v1/embeddings", "messages": "/v1/messages"}
PYTHON_CALLS = {"chat.completions": "client.chat.completions.create", "responses": "client.responses.create",
                "embeddings": "client.embeddings.create"}


@dataclass(frozen=True)
class Turn:
    role: str
    text: str
    tool_calls: list[str] = field(default_factory=list)


def conversation(request_body: dict | None, response_body: dict | None) -> list[Turn]:
    """The turns of a chat call: the messages sent, then the model's answer. Empty for a body
    that is no chat (an embedding, a responses call given a plain string is one user turn)."""
    if not isinstance(request_body, dict):
        return []
    sent = request_body.get("messages")
    if sent is None and "input" in request_body:
        sent = [{"role": "user", "content": request_body["input"]}] if isinstance(request_body["input"], str) \
            else request_body["input"]
    turns = [_turn(message) for message in sent or [] if isinstance(message, dict)]
    return turns + _answer(response_body)


def _turn(message: dict) -> Turn:
    calls = [f"{call.get('function', {}).get('name', '?')}({call.get('function', {}).get('arguments', '')})"
             for call in message.get("tool_calls") or [] if isinstance(call, dict)]
    return Turn(role=str(message.get("role", "?")), text=_text(message.get("content")), tool_calls=calls)


def _text(content) -> str:
    """A message's content as text: a string as it is, the text parts of a list of parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = [part.get("text") or part.get("output_text") or f"[{part.get('type', 'part')}]"
                 for part in content if isinstance(part, dict)]
        return "\n".join(str(part) for part in parts)
    return "" if content is None else json.dumps(content)


def _answer(response_body: dict | None) -> list[Turn]:
    if not isinstance(response_body, dict):
        return []
    choices = response_body.get("choices")
    if isinstance(choices, list) and choices and isinstance(choices[0], dict):
        return [_turn(choices[0].get("message") or {})]
    if isinstance(response_body.get("output"), list):
        text = "\n".join(_text(item.get("content")) for item in response_body["output"]
                         if isinstance(item, dict) and item.get("type") == "message")
        return [Turn(role="assistant", text=text)] if text else []
    return []


def as_curl(*, base_url: str, endpoint: str, body: dict) -> str:
    """The call again, from a shell, with the key in $NEMO_API_KEY."""
    path = ENDPOINT_PATHS.get(endpoint, "/v1/chat/completions")
    return (f"curl {shlex.quote(base_url + path)} \\\n"
            '  -H "Authorization: Bearer $NEMO_API_KEY" \\\n'
            "  -H 'Content-Type: application/json' \\\n"
            f"  -d {shlex.quote(json.dumps(body, ensure_ascii=False))}")


def as_python(*, base_url: str, endpoint: str, body: dict) -> str | None:
    """The call again with the openai package; None for an API it has no client for."""
    call = PYTHON_CALLS.get(endpoint)
    if call is None:
        return None
    return ("import json, os\n"
            "from openai import OpenAI\n\n"
            f'client = OpenAI(base_url="{base_url}/v1", api_key=os.environ["NEMO_API_KEY"])\n'
            f"body = json.loads({json.dumps(json.dumps(body, ensure_ascii=False), ensure_ascii=False)})\n"
            f"print({call}(**body))")
