"""Spend by day, key, team and model, drawn with Chart.js, and the same rows as CSV."""

import csv
from datetime import datetime, timedelta
from decimal import Decimal

from django.http import HttpRequest, HttpResponse
from django.utils import timezone

from analytics.selectors import spend_rows
from billing.selectors import catalog_list
from dashboard.forms import GROUPS, SpendForm, model_choices
from dashboard.orgs import org_page, render_page
from dashboard.selectors import credit_balance
from keys.models import Membership

CSV_COLUMNS = ("group", "cost", "calls", "prompt_tokens", "completion_tokens")
MAX_CHART_DAYS = 400
MODELS_NAMED = 3
SUMMED = ("cost", "calls", "prompt_tokens", "completion_tokens")


@org_page()
def spend(request: HttpRequest, membership: Membership) -> HttpResponse:
    form = SpendForm(request.GET)
    since, until = form.range()
    groups = {group: spend_rows(org=membership.org, group_by=group, since=since, until=until) for group in GROUPS}
    groups["model"] = _unknown_models_together(groups["model"])
    chart_rows = {**groups, "day": _every_day(groups["day"], since, until)}
    return render_page(request, membership, "dashboard/spend.html", {
        "form": form,
        "groups": groups,
        "since": since,
        "until": until,
        "total_cost": sum((row["cost"] for row in groups["day"]), Decimal(0)),
        "total_calls": sum(row["calls"] for row in groups["day"]),
        "balance": credit_balance(org=membership.org),
        "chart_data": {group: [_chart_point(row) for row in rows] for group, rows in chart_rows.items()},
    }, status=200 if form.is_valid() else 400)


def _unknown_models_together(rows: list[dict]) -> list[dict]:
    """Calls naming no model, or one neither the catalog nor the routing file has (refused with a
    400 or 404, at no cost), as one row of each kind, named so, instead of a bar per typo."""
    known = {model.name for model in catalog_list()} | {name for name, _ in model_choices()}
    kept: list[dict] = []
    unknown: list[dict] = []
    unnamed: list[dict] = []
    for row in rows:
        (kept if row["group"] in known else unnamed if not row["group"] else unknown).append(row)
    if unknown:
        names = ", ".join(row["group"] for row in unknown[:MODELS_NAMED])
        more = f" and {len(unknown) - MODELS_NAMED} more" if len(unknown) > MODELS_NAMED else ""
        kept.append(_merged(unknown, f"unknown models ({names}{more})"))
    if unnamed:
        kept.append(_merged(unnamed, "no model named"))
    return kept


def _merged(rows: list[dict], label: str) -> dict:
    return {"group": label, **{column: sum(row[column] for row in rows) for column in SUMMED}}


def _every_day(rows: list[dict], since: datetime, until: datetime | None) -> list[dict]:
    """The day rows with the quiet days put back at zero, so the line shows them (for ranges a
    chart can show; longer ones keep only the days with spend)."""
    last = (until - timedelta(days=1)).date() if until else timezone.now().date()
    days = (last - since.date()).days + 1
    if not 0 < days <= MAX_CHART_DAYS:
        return rows
    spent = {row["group"]: row for row in rows}
    every = [since.date() + timedelta(days=offset) for offset in range(days)]
    return [spent.get(day.isoformat(), {"group": day.isoformat(), "cost": Decimal(0), "calls": 0})
            for day in every]


def _chart_point(row: dict) -> dict:
    # Money stays a decimal string in the page; the chart script turns it into a number to draw.
    return {"group": str(row["group"]), "cost": str(row["cost"]), "calls": row["calls"]}


@org_page()
def spend_csv(request: HttpRequest, membership: Membership) -> HttpResponse:
    form = SpendForm(request.GET)
    if not form.is_valid():
        return HttpResponse("bad range or grouping\n", status=400, content_type="text/plain")
    since, until = form.range()
    group = form.group()
    rows = spend_rows(org=membership.org, group_by=group, since=since, until=until)
    response = HttpResponse(content_type="text/csv; charset=utf-8")
    stamp = timezone.now().strftime("%Y%m%d")
    response["Content-Disposition"] = f'attachment; filename="spend-{membership.org.slug}-{group}-{stamp}.csv"'
    writer = csv.writer(response)
    writer.writerow(CSV_COLUMNS)
    for row in rows:
        writer.writerow([_cell(row[column]) for column in CSV_COLUMNS])
    return response


def _cell(value) -> object:
    """Key and team names are typed by users; a spreadsheet must not run one as a formula."""
    text = str(value)
    return "'" + text if isinstance(value, str) and text[:1] in ("=", "+", "-", "@", "\t", "\r") else value
