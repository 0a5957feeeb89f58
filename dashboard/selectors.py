"""Reads that join apps which may not import each other, scoped by org like every tenant read.

Billing holds budgets and credits, analytics reads spend from the request log, and neither
imports the other; what weighs one against the other (a budget's spend this period, the credit
balance, a run against its key's budget) is read here, above both, for the dashboard, the API
and the support admin. Also the reads the dashboard needs that no app offers.
"""

from dataclasses import dataclass, fields
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from django.db import connection
from django.db.models import Aggregate, Count, IntegerField, OuterRef, Q, Subquery
from django.db.models.functions import TruncHour
from django.http import Http404
from django.utils import timezone

from analytics.models import RequestLog
from analytics.selectors import (
    FELL_BACK,
    KeyTotals,
    RunSummary,
    percentiles,
    run_get,
    spend_rows,
    spend_total,
    use_by_key,
)
from billing.models import Budget
from billing.periods import period_start
from billing.selectors import credits_granted
from keys.models import Organization, OrgToken, VirtualKey
from keys.selectors import org_token_list


def org_token_get(*, org: Organization, pk: int) -> OrgToken:
    token = org_token_list(org=org).filter(pk=pk).first()
    if token is None:
        raise Http404("No such token.")
    return token


def credit_balance(*, org: Organization) -> Decimal:
    """What is left of the org's credits: every grant less everything it spent."""
    return credits_granted(org_id=org.pk) - spend_total(org_id=org.pk)


def budget_spent(*, budget: Budget, now: datetime | None = None) -> Decimal:
    """What counts against the budget: its owner's spend since its period began (all of it
    without a period)."""
    return spend_total(
        org_id=budget.org_id,
        since=period_start(budget.period, now or timezone.now()),
        key_id=budget.key_id if budget.scope == Budget.Scope.KEY else None,
        team_id=budget.team_id if budget.scope == Budget.Scope.TEAM else None,
    )


# A key's totals in its budget's current period, with when that began (None: all time).
PeriodTotals = tuple[datetime | None, KeyTotals]


def key_spend(*, org: Organization, now: datetime | None = None) -> dict[int, Decimal]:
    """Spend of every key of the org in its budget's current period (all time without a budget)."""
    return {key_id: totals.cost for key_id, (_, totals) in key_period_totals(org=org, now=now).items()}


def key_period_totals(*, org: Organization, now: datetime | None = None) -> dict[int, PeriodTotals]:
    """Spend, calls and failed calls of every key of the org in its budget's current period (all
    time without a budget), with when that period began (None: all time). Read from the daily
    ledger, a read per distinct period start."""
    now = now or timezone.now()
    periods = dict(Budget.objects.filter(org=org, scope=Budget.Scope.KEY).values_list("key_id", "period"))
    keys_by_start: dict[datetime | None, list[int]] = {}
    for key_id in VirtualKey.objects.filter(org=org).values_list("pk", flat=True):
        start = period_start(periods.get(key_id, Budget.Period.NONE), now)
        keys_by_start.setdefault(start, []).append(key_id)
    found: dict[int, PeriodTotals] = {}
    for start, key_ids in keys_by_start.items():
        found.update({key_id: (start, totals) for key_id, totals in use_by_key(org=org, key_ids=key_ids,
                                                                              since=start).items()})
    return found


@dataclass
class BudgetedRun(RunSummary):
    """A run with its key's budget, as the run page and the API show it."""

    budget: Decimal | None
    budget_period: str | None


def run_with_budget(*, org: Organization, run_id: str) -> BudgetedRun:
    run = run_get(org=org, run_id=run_id)
    budget = Budget.objects.filter(org=org, scope=Budget.Scope.KEY, key=run.key).first() if run.key else None
    return BudgetedRun(
        **{field.name: getattr(run, field.name) for field in fields(run)},
        budget=budget.amount if budget else None,
        budget_period=budget.period if budget else None,
    )


class Percentile(Aggregate):
    """PostgreSQL's ``percentile_disc``: the value at ``fraction`` of the ordered values."""

    function = "percentile_disc"
    template = "%(function)s(%(fraction)s) WITHIN GROUP (ORDER BY %(expressions)s)"

    def __init__(self, expression, fraction: float, **extra) -> None:
        super().__init__(expression, fraction=fraction, output_field=IntegerField(), **extra)


# The latest calls of a window that its latency percentiles and fallbacks are read from.
ACTIVITY_SAMPLE = 20_000


@dataclass(frozen=True)
class Activity:
    """What an org's calls did in a window: how many, their cost, how many failed or fell back,
    and how long they took. ``sampled``: when the window holds more than ACTIVITY_SAMPLE calls,
    the fallbacks and latencies are those of its latest ACTIVITY_SAMPLE calls (None: of all)."""

    calls: int
    cost: Decimal
    errors: int
    fallbacks: int
    p50_ms: int | None
    p95_ms: int | None
    sampled: int | None = None

    @property
    def error_rate(self) -> Decimal | None:
        return (Decimal(self.errors) * 100 / self.calls).quantize(Decimal("0.1")) if self.calls else None


def activity(*, org: Organization, since: datetime) -> Activity:
    """The calls and cost of a window from the spend rollup (exact, a row a day however busy), its
    failures counted in the (org, status, created) index, and the fallbacks and latency of its
    latest ACTIVITY_SAMPLE calls, read newest first through (org, created): a month of a busy org
    is millions of rows, which one aggregate would read whole (1.1 s at a million)."""
    days = spend_rows(org=org, group_by="day", since=since)
    calls = sum(row["calls"] for row in days)
    window = RequestLog.objects.filter(org=org, created__gte=since)
    latest = window.order_by("-created", "-id")[:ACTIVITY_SAMPLE]
    if connection.vendor == "postgresql":
        latest = latest.aggregate(fallbacks=Count("id", filter=FELL_BACK), p50_ms=Percentile("latency_ms", 0.5),
                                  p95_ms=Percentile("latency_ms", 0.95))
    else:  # SQLite (the embedded default) has no percentile_disc: the same of the sample, read
        sample = list(latest.values_list("latency_ms", "attempts"))
        p50_ms, p95_ms = percentiles([latency for latency, _ in sample]) or (None, None)
        latest = {"fallbacks": sum(1 for _, attempts in sample if len(attempts) > 1), "p50_ms": p50_ms,
                  "p95_ms": p95_ms}
    return Activity(calls=calls, cost=sum((row["cost"] for row in days), Decimal(0)).quantize(Decimal("0.000001")),
                    errors=window.filter(status__gte=400).count(), fallbacks=latest["fallbacks"],
                    p50_ms=latest["p50_ms"], p95_ms=latest["p95_ms"],
                    sampled=ACTIVITY_SAMPLE if calls > ACTIVITY_SAMPLE else None)


def calls_by_hour(*, org: Organization, since: datetime) -> list[dict]:
    """The org's calls and failures per hour since a moment, every hour listed, quiet ones at zero."""
    counted = [
        (row["hour"], row["calls"], row["errors"])
        for row in RequestLog.objects.filter(org=org, created__gte=since)
        .values(hour=TruncHour("created", tzinfo=UTC))
        .annotate(calls=Count("id"), errors=Count("id", filter=Q(status__gte=400)))
        .order_by()
    ]
    return calls_histogram(counted, start=since, end=timezone.now(), unit="hour")


# A histogram of calls has a bar an hour over up to two days, a day up to four months, a month beyond.
_BAR_UNITS = ((timedelta(hours=48), "hour"), (timedelta(days=120), "day"))
_BAR_LABELS = {"hour": "%H:%M", "day": "%Y-%m-%d", "month": "%Y-%m"}


def _bar_unit(start: datetime, end: datetime) -> str:
    return next((unit for span, unit in _BAR_UNITS if end - start <= span), "month")


def _bar_of(moment: datetime, unit: str) -> datetime:
    moment = moment.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
    if unit == "hour":
        return moment
    moment = moment.replace(hour=0)
    return moment if unit == "day" else moment.replace(day=1)


def _bar_after(bar: datetime, unit: str) -> datetime:
    if unit == "month":
        return (bar + timedelta(days=32)).replace(day=1)
    return bar + (timedelta(hours=1) if unit == "hour" else timedelta(days=1))


def calls_histogram(hours: list[tuple[datetime, int, int]], *, start: datetime, end: datetime,
                    unit: str | None = None) -> list[dict]:
    """Calls and failures per hour, per day or per month (``_bar_unit`` of the span, unless
    given) from ``start`` to ``end``, every bar listed, quiet ones at zero, from the counts of
    each hour ``(hour, calls, errors)``."""
    unit = unit or _bar_unit(start, end)
    counted: dict[datetime, list[int]] = {}
    for hour, calls, errors in hours:
        bar = counted.setdefault(_bar_of(hour, unit), [0, 0])
        bar[0] += calls
        bar[1] += errors
    # Dated: an hour's label alone repeats over two days.
    label = "%m-%d %H:%M" if unit == "hour" and end - start > timedelta(hours=24) else _BAR_LABELS[unit]
    bars, bar = [], _bar_of(start, unit)
    while bar <= end:
        calls, errors = counted.get(bar, (0, 0))
        bars.append({"label": bar.strftime(label), "calls": calls, "errors": errors})
        bar = _bar_after(bar, unit)
    return bars


@dataclass(frozen=True)
class KeyUse:
    """A key's calls and failures over the window its spend is counted in (its budget's current
    period, from ``since``; all time when ``since`` is None), and when it was last used."""

    calls: int
    errors: int
    last_used: datetime | None
    since: datetime | None = None

    @property
    def error_rate(self) -> Decimal | None:
        return (Decimal(self.errors) * 100 / self.calls).quantize(Decimal("0.1")) if self.calls else None


def keys_last_used(*, org: Organization, key_ids: list[int]) -> dict[int, datetime | None]:
    """When each key was last used: one (org, key, created) index lookup per key, however old."""
    return dict(
        VirtualKey.objects.filter(org=org, pk__in=key_ids).annotate(last_used=Subquery(
            RequestLog.objects.filter(org=org, key_id=OuterRef("pk")).order_by("-created", "-id").values("created")[:1]
        )).values_list("pk", "last_used")
    )
