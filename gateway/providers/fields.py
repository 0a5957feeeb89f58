"""The Chat Completions fields besides messages and tools, for wire formats that have no field of
their own for some of them (Gemini, Claude): each field a client sends is mapped where the
provider has an equivalent, ignored where it changes nothing of the answer (``IGNORED`` says
why), or refused with a 400 naming it, before anything is sent. Never dropped while answering 200.

A translator names the fields it carries; ``refuse_uncarried`` refuses every other field that
asks for something (``n: 1``, ``logprobs: false``, a penalty of 0 ask for nothing).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Container

from gateway.providers.shapes import Untranslatable, untranslatable

REASONING_EFFORTS = ("none", "minimal", "low", "medium", "high", "xhigh")

# Fields that change nothing of the answer a client gets: safe to leave behind on any wire format.
IGNORED = {
    "model": "the gateway's model name, replaced by the link's own model id",
    "stream": "read by the gateway (the streamed endpoint is chosen by it)",
    "stream_options": "read by the gateway (it always counts usage, and sends it when asked)",
    "metadata": "tags for OpenAI's stored completions; nothing of the answer depends on them",
    "store": "whether OpenAI keeps the completion for its dashboard; the request log keeps it here",
    "service_tier": "OpenAI's capacity tier (latency and price): the answer is the same",
    "prediction": "a predicted output speeds up an OpenAI answer; the answer is the same",
    "user": "an end-user id for OpenAI's abuse monitoring",
}


def _is_zero(value) -> bool:
    return value == 0


# The values of a field that ask for nothing: a field holding one is not refused.
_NEUTRAL: dict[str, Callable[[object], bool]] = {
    "n": lambda value: value == 1,
    "logprobs": lambda value: value is False,
    "top_logprobs": _is_zero,
    "presence_penalty": _is_zero,
    "frequency_penalty": _is_zero,
    "logit_bias": lambda value: value == {},
    "parallel_tool_calls": lambda value: value is True,
    "modalities": lambda value: value == ["text"],
    "stop": lambda value: value == [],
    "response_format": lambda value: isinstance(value, dict) and value.get("type") == "text",
    "tools": lambda value: value == [],
}


def asks_for_something(name: str, value) -> bool:
    return value is not None and not _NEUTRAL.get(name, lambda _: False)(value)


def refuse_uncarried(body: dict, *, wire: str, carried: Container[str]) -> None:
    """A 400 naming the first field of ``body`` that ``wire`` cannot carry: not in ``carried``,
    not ``IGNORED``, and asking for something."""
    for name, value in body.items():
        if name in carried or name in IGNORED or not asks_for_something(name, value):
            continue
        raise refuse(name, f"{wire} has no equivalent of it")


def refuse(param: str, reason: str) -> Untranslatable:
    """A 400 naming ``param``, which this model cannot take, and why (``reason``)."""
    return untranslatable(f"Unsupported parameter: {param!r} cannot be sent to this model ({reason}); send the "
                          f"request without it, or to a model that takes it.", param=param)


def reasoning_effort(body: dict) -> str | None:
    effort = body.get("reasoning_effort")
    if effort is not None and effort not in REASONING_EFFORTS:
        raise untranslatable(f"Invalid value for 'reasoning_effort': it must be one of {', '.join(REASONING_EFFORTS)}",
                             param="reasoning_effort")
    return effort


# --- Gemini ---------------------------------------------------------------------------------------

# Gemini 2.5 thinks within a token budget (0 turns thinking off, where the model can: Pro cannot,
# its least is 128; Flash and Flash-Lite take up to 24 576, Pro up to 32 768).
_GEMINI_BUDGETS = {"none": 0, "minimal": 512, "low": 1024, "medium": 8192, "high": 24576, "xhigh": 32768}
# Gemini 3 thinks at a level: Pro knows LOW and HIGH, Flash MINIMAL, LOW, MEDIUM and HIGH.
_GEMINI_LEVELS = {"none": "MINIMAL", "minimal": "MINIMAL", "low": "LOW", "medium": "MEDIUM", "high": "HIGH",
                  "xhigh": "HIGH"}
_GEMINI_PRO_LEVELS = {"none": "LOW", "minimal": "LOW", "low": "LOW", "medium": "HIGH", "high": "HIGH",
                      "xhigh": "HIGH"}
_GEMINI_VERSION = re.compile(r"gemini-(\d+)(?:\.(\d+))?")


def gemini_thinking_config(effort: str, model: str, *, budget: int | None = None) -> dict:
    """``reasoning_effort`` as Gemini's ``thinkingConfig`` for ``model`` (the link's model id);
    ``budget``: the tokens the client named to think in (Claude's ``budget_tokens``), which a
    model that thinks within a budget takes, bounded to its own."""
    name = model.lower()
    version = _GEMINI_VERSION.search(name)
    major, minor = (int(version[1]), int(version[2] or 0)) if version else (None, 0)
    pro = "-pro" in name
    if major is not None and (major, minor) < (2, 5):
        raise refuse("reasoning_effort", f"{model} does not think")
    if major is not None and major >= 3:
        return {"thinkingLevel": (_GEMINI_PRO_LEVELS if pro else _GEMINI_LEVELS)[effort]}
    # 2.5, or a name without a version (a tuned model's): budgets, which every thinking model takes.
    if budget is None:
        budget = _GEMINI_BUDGETS[effort]
    if pro:
        budget = min(max(budget, 128), 32768)
    else:
        budget = min(budget, 24576)
    return {"thinkingBudget": budget}


def gemini_logprobs(body: dict) -> dict:
    """``logprobs`` / ``top_logprobs`` as Gemini's ``responseLogprobs`` / ``logprobs``."""
    top = body.get("top_logprobs") or 0
    if not body.get("logprobs"):
        if top:
            raise untranslatable("Invalid value for 'top_logprobs': it needs logprobs: true", param="top_logprobs")
        return {}
    return {"responseLogprobs": True, **({"logprobs": top} if top else {})}


def openai_logprobs(result: dict | None, *, with_top: bool = True) -> dict | None:
    """Gemini's ``logprobsResult`` as OpenAI's ``choices[].logprobs``."""
    if not result:
        return None
    chosen = result.get("chosenCandidates") or []
    tops = result.get("topCandidates") or []
    content = []
    for step, candidate in enumerate(chosen):
        token = _token_logprob(candidate)
        alternatives = (tops[step].get("candidates") or []) if with_top and step < len(tops) else []
        token["top_logprobs"] = [_token_logprob(alternative) for alternative in alternatives]
        content.append(token)
    return {"content": content, "refusal": None}


def _token_logprob(candidate: dict) -> dict:
    token = candidate.get("token") or ""
    return {"token": token, "logprob": candidate.get("logProbability", 0.0), "bytes": list(token.encode())}


# --- Claude ---------------------------------------------------------------------------------------

# Claude thinks within ``budget_tokens``: at least 1024, and below ``max_tokens``.
CLAUDE_MIN_BUDGET = 1024
_CLAUDE_BUDGETS = {"minimal": 1024, "low": 2048, "medium": 8192, "high": 16384, "xhigh": 32000}
# Claude models before 3.7 do not think.
_CLAUDE_WITHOUT_THINKING = re.compile(r"claude-(instant|2|3-(opus|sonnet|haiku)|3-5)")


def claude_thinking(effort: str, *, model: str, client_max_tokens: int | None, default_max_tokens: int,
                    output_cap: int | None) -> tuple[dict, int] | None:
    """``reasoning_effort`` as Claude's ``thinking`` and the ``max_tokens`` to send with it, or
    None for ``none``. OpenAI's output limit counts the reasoning too, as Claude's does; a call
    that names none gets the budget and the usual answer room (within the reserved cap)."""
    if effort == "none":
        return None
    if model and _CLAUDE_WITHOUT_THINKING.search(model.lower()):
        raise refuse("reasoning_effort", f"{model} does not think")
    budget = _CLAUDE_BUDGETS[effort]
    if client_max_tokens:
        limit = client_max_tokens
    else:
        limit = budget + default_max_tokens
        if output_cap:
            limit = min(limit, output_cap)
    # At least a quarter of the limit is left for the answer.
    budget = min(budget, limit - max(1, limit // 4))
    if budget < CLAUDE_MIN_BUDGET:
        raise refuse("reasoning_effort", f"Claude thinks in at least {CLAUDE_MIN_BUDGET} tokens, which leaves no "
                                         f"room for an answer within max_completion_tokens={limit}")
    return {"type": "enabled", "budget_tokens": budget}, limit


def refuse_beside_thinking(body: dict) -> None:
    """What Claude does not take while it thinks: a temperature but 1, top_p below 0.95, top_k,
    a forced tool call."""
    temperature = body.get("temperature")
    if temperature is not None and temperature != 1:
        raise refuse("temperature", "Claude thinks only at temperature 1")
    top_p = body.get("top_p")
    if top_p is not None and top_p < 0.95:
        raise refuse("top_p", "Claude thinks only with top_p from 0.95 to 1")
    if body.get("top_k") is not None:
        raise refuse("top_k", "Claude does not take top_k while it thinks")
    tool_choice = body.get("tool_choice")
    if body.get("tools") and (tool_choice == "required" or isinstance(tool_choice, dict)):
        raise refuse("tool_choice", "Claude cannot be forced to call a tool while it thinks")
