"""Formatting for the dashboard: money, durations, statuses."""

import json
from datetime import UTC
from decimal import Decimal, InvalidOperation

from django import template
from django.utils.formats import date_format

from money import usd_text

register = template.Library()


@register.filter
def money(value) -> str:
    """An amount as money.usd_text shows it everywhere; ``—`` for none."""
    if value is None or value == "":
        return "—"
    try:
        amount = Decimal(str(value))
    except InvalidOperation:
        return "—"
    return usd_text(amount) if amount.is_finite() else "—"


@register.filter
def when(value) -> str:
    """The one way a moment is shown, in UTC: the DATETIME_FORMAT of nemo/formats, the admin's too."""
    if value is None or value == "":
        return "—"
    return date_format(value.astimezone(UTC), "DATETIME_FORMAT")


@register.filter
def day(value) -> str:
    """A calendar day (a budget period's start, a date range's end): the DATE_FORMAT of nemo/formats."""
    if value is None or value == "":
        return "—"
    return date_format(value, "DATE_FORMAT")


@register.filter
def duration_ms(value) -> str:
    if value is None or value == "":
        return "—"
    ms = int(value)
    return f"{ms / 1000:.2f} s" if ms >= 1000 else f"{ms} ms"


@register.filter
def status_class(status) -> str:
    """A CSS class for an HTTP status or a run/attempt outcome."""
    text = str(status)
    if text.isdigit():
        code = int(text)
        return "ok" if code < 400 else ("warn" if code in (402, 429) else "bad")
    return {"ok": "ok", "completed": "ok", "running": "warn", "active": "ok", "over budget": "bad",
            "out of credits": "bad", "healthy": "ok", "no delivery yet": "none"}.get(text, "bad")


@register.filter
def percent_of(part, whole) -> int:
    """How much of ``whole`` is ``part``, in whole percent capped at 100, for a progress bar."""
    try:
        part, whole = Decimal(str(part)), Decimal(str(whole))
    except InvalidOperation:
        return 0
    if whole <= 0:
        return 100 if part > 0 else 0
    return int(min(part / whole * 100, Decimal(100)))


@register.filter
def pretty_json(value) -> str:
    """A stored request or response body, indented; the template escapes it."""
    return json.dumps(value, indent=2, ensure_ascii=False, default=str)


@register.filter
def sink_target(sink) -> str:
    """Where a sink sends to, without any of its secrets."""
    config = sink.config or {}
    if config.get("bucket"):
        return f"s3://{config['bucket']}/{config.get('prefix', '')}"
    return config.get("url") or "the service's default endpoint"


@register.filter
def sink_health(sink) -> str:
    """``healthy`` only once a delivery succeeded; a new sink has proved nothing yet."""
    if sink.consecutive_failures:
        failures = sink.consecutive_failures
        return f"{failures} failure{'s' if failures != 1 else ''} in a row"
    return "healthy" if sink.last_success else "no delivery yet"


@register.simple_tag(takes_context=True)
def nav_class(context, path: str) -> str:
    """``current`` for the nav entry of the section the page belongs to (its path prefix)."""
    request = context.get("request")
    return "current" if request is not None and request.path.startswith(path) else ""
