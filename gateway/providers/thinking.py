"""A model's thinking in the internal answer, and the signatures the gateway puts on it.

The internal (Chat Completions) answer carries what a model thought as DeepSeek and vLLM do:
``reasoning_content`` on the message or a stream's delta (``reasoning``, which some servers send
instead, is read alike), and beside it ``reasoning_signature``, which lets the thinking come back
on the next turn. A Claude link's thinking goes to an Anthropic client as it came, signed by
Claude. Any other link's is signed here: Gemini's ``thoughtSignature`` behind ``GEMINI_SIGNED``
(so a thinking block passed back brings Gemini its signature), and thinking that has no
signature of its upstream (an OpenAI-compatible server's) as ``UNSIGNED``. No upstream can check
a signature the gateway made, so none is ever sent one: Gemini is sent back its own signature
alone, and Claude none of them (it answers a signature not its own with a 400).
"""

from __future__ import annotations

# A signature of Claude's is base64, which has no '.': these prefixes cannot be taken for one.
GEMINI_SIGNED = "nemo.gemini."
UNSIGNED = "nemo.unsigned"
_GATEWAY_SIGNED = "nemo."

# The internal call's field that asks to see the model's thinking, within this many tokens.
THINKING_BUDGET = "thinking_budget"


def reasoning_of(message: dict) -> str:
    """The thinking on an answer's message or a stream's delta."""
    return message.get("reasoning_content") or message.get("reasoning") or ""


def gemini_signed(signature: str) -> str:
    return GEMINI_SIGNED + signature


def gemini_signature(signature: str | None) -> str | None:
    """Gemini's own signature inside one the gateway made, or None."""
    if isinstance(signature, str) and signature.startswith(GEMINI_SIGNED):
        return signature.removeprefix(GEMINI_SIGNED) or None
    return None


def gateway_signed(signature) -> bool:
    """Whether the gateway made the signature (no upstream can check it)."""
    return isinstance(signature, str) and signature.startswith(_GATEWAY_SIGNED)


def resumable(signature) -> bool:
    """Whether thinking under this gateway-made signature is worth sending back: it carries an
    upstream's own (Gemini's); an ``UNSIGNED`` one is dropped on the way back."""
    return gemini_signature(signature) is not None


def without_gateway_thinking(turns: list) -> list:
    """Anthropic turns without the thinking blocks the gateway signed, for Claude."""
    kept = []
    for turn in turns:
        content = turn.get("content") if isinstance(turn, dict) else None
        if isinstance(content, list) and any(_gateway_thinking(block) for block in content):
            turn = {**turn, "content": [block for block in content if not _gateway_thinking(block)]}
        kept.append(turn)
    return kept


def _gateway_thinking(block) -> bool:
    return isinstance(block, dict) and block.get("type") == "thinking" and gateway_signed(block.get("signature"))
