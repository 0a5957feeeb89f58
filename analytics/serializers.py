"""The one JSON shape of a log row, shared by the exporters and the management API."""

from decimal import Decimal

from analytics.models import RequestLog

_MICRO = Decimal("0.000001")


def money_string(amount: Decimal | int | str) -> str:
    """USD as a decimal string with six places (``"0.001250"``), the contract's money format."""
    return format(Decimal(amount).quantize(_MICRO), "f")


def log_row_dict(row: RequestLog, *, bodies: bool = False) -> dict:
    """A log row as the contract describes it. ``bodies`` adds the stored prompt and response
    (present only when the org stores them)."""
    data = {
        "request_id": row.request_id,
        "run_id": row.run_id,
        "endpoint": row.endpoint,
        "key": row.key_prefix,
        "model": row.model,
        "deployment": row.deployment,
        "provider": row.provider,
        "status": row.status,
        "error": row.error,
        "error_type": row.error_type,
        "error_code": row.error_code,
        "error_param": row.error_param,
        "attempts": row.attempts,
        "stream": row.stream,
        "latency_ms": row.latency_ms,
        "ttft_ms": row.ttft_ms,
        "prompt_tokens": row.prompt_tokens,
        "completion_tokens": row.completion_tokens,
        "cached_tokens": row.cached_tokens,
        "cost": money_string(row.cost),
        "overshoot": money_string(row.overshoot),
        "finish_reason": row.finish_reason,
        "tool_calls": row.tool_calls,
        "tools_offered": row.tools_offered,
        "prompt_meta": row.prompt_meta,
        "cache": row.cache,
        "tags": row.tags or [],
        "created": row.created.isoformat(),
    }
    if bodies:
        data["request_body"] = row.request_body
        data["response_body"] = row.response_body
    return data
