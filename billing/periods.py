"""Budget periods on UTC calendar boundaries.

A period is named by its start (``2026-11``, ``2026-11-23``, ``2026-W48``); counters are keyed by
that name, so a new period is simply a new counter and nothing has to be reset.
"""

from datetime import UTC, datetime, timedelta


def period_start(period: str, now: datetime) -> datetime | None:
    now = now.astimezone(UTC)
    midnight = now.replace(hour=0, minute=0, second=0, microsecond=0)
    if period == "daily":
        return midnight
    if period == "weekly":
        return midnight - timedelta(days=midnight.weekday())
    if period == "monthly":
        return midnight.replace(day=1)
    if period == "none":
        return None
    raise ValueError(f"unknown budget period {period!r}")


def period_end(period: str, now: datetime) -> datetime | None:
    start = period_start(period, now)
    if start is None:
        return None
    if period == "daily":
        return start + timedelta(days=1)
    if period == "weekly":
        return start + timedelta(days=7)
    return (start + timedelta(days=32)).replace(day=1)


def period_name(period: str, now: datetime) -> str:
    start = period_start(period, now)
    if start is None:
        return "all"
    if period == "daily":
        return start.strftime("%Y-%m-%d")
    if period == "weekly":
        year, week, _ = start.isocalendar()
        return f"{year}-W{week:02d}"
    return start.strftime("%Y-%m")
