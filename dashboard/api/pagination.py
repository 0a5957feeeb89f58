"""Keyset pagination for the management API's lists: ``{"results": [...], "next": <cursor or null>}``.

The cursor carries the ordering values of the last row shown, so a page starts right after it
even when rows were added meanwhile (an offset would skip or repeat rows).
"""

import base64
import json
from dataclasses import dataclass

from django.core.exceptions import ValidationError as DjangoValidationError
from django.db.models import Model, Q, QuerySet

DEFAULT_LIMIT = 50
MAX_LIMIT = 200


@dataclass(frozen=True)
class Page:
    rows: list
    next_cursor: str | None


def _encode(values: list) -> str:
    raw = json.dumps(values, default=str).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode(cursor: str, model: type[Model], fields: list[str]) -> list:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        values = json.loads(raw)
        if not isinstance(values, list) or len(values) != len(fields):
            raise ValueError("wrong number of values")
        decoded = [model._meta.get_field(name).to_python(value) for name, value in zip(fields, values, strict=True)]
    except (ValueError, TypeError, DjangoValidationError) as exc:  # bad base64, JSON and values are all ValueErrors
        raise ValueError("bad cursor") from exc
    # No row holds a NUL (PostgreSQL's text cannot), so no list gave out a cursor with one.
    if any(isinstance(value, str) and "\x00" in value for value in decoded):
        raise ValueError("bad cursor")
    return decoded


def _after(ordering: tuple[str, ...], values: list) -> Q:
    """Rows that come after ``values`` in ``ordering``: (a > x) or (a = x and b > y) or …"""
    condition = Q()
    equal_so_far = Q()
    for field, value in zip(ordering, values, strict=True):
        name = field.lstrip("-")
        lookup = "lt" if field.startswith("-") else "gt"
        condition |= equal_so_far & Q(**{f"{name}__{lookup}": value})
        equal_so_far &= Q(**{name: value})
    return condition


def keyset_page(queryset: QuerySet, *, ordering: tuple[str, ...], cursor: str | None, limit: int) -> Page:
    """One page of ``queryset`` in ``ordering`` (which must end in a unique field); ValueError on a bad cursor."""
    fields = [field.lstrip("-") for field in ordering]
    queryset = queryset.order_by(*ordering)
    if cursor:
        queryset = queryset.filter(_after(ordering, _decode(cursor, queryset.model, fields)))
    rows = list(queryset[: limit + 1])
    if len(rows) <= limit:
        return Page(rows=rows, next_cursor=None)
    last = rows[limit - 1]
    return Page(rows=rows[:limit], next_cursor=_encode([getattr(last, name) for name in fields]))
