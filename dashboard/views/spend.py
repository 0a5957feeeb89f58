"""Spend by day, key, team and model, drawn with Chart.js, and the same rows as CSV."""

import csv
import io
from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from decimal import Decimal

import orjson
from asgiref.sync import sync_to_async
from django.http import HttpRequest, HttpResponse, StreamingHttpResponse
from django.utils import timezone

from analytics.models import RequestLog
from analytics.selectors import MAX_PAGE, TOTALS_SCAN_ROWS, log_list, log_totals, spend_by_day_and_model, spend_rows
from analytics.serializers import money_string
from billing.selectors import catalog_list
from dashboard.forms import GROUPS, SpendForm, model_choices
from dashboard.orgs import org_page, render_page
from dashboard.selectors import credit_balance
from keys.models import Membership

CSV_COLUMNS = ("group", "cost", "calls", "prompt_tokens", "completion_tokens")
MAX_CHART_DAYS = 400
MODELS_NAMED = 3
# The day chart stacks the dearest models of the range one by one, and the rest together.
MODELS_STACKED = 6
SUMMED = ("cost", "calls", "prompt_tokens", "completion_tokens")
# The CSV of a range's calls: at most this many days of them, newest first, one page of the log
# at a time, so a month of a busy org streams out without being held in memory.
CALLS_CSV_DAYS = 31
CALLS_CSV_COLUMNS = ("created", "request_id", "key", "key_name", "run_id", "endpoint", "model", "deployment",
                     "status", "error_code", "prompt_tokens", "completion_tokens", "cached_tokens", "cost",
                     "latency_ms", "ttft_ms", "cache", "tags")


@org_page()
def spend(request: HttpRequest, membership: Membership) -> HttpResponse:
    form = SpendForm(request.GET)
    since, until = form.range()
    groups = {group: spend_rows(org=membership.org, group_by=group, since=since, until=until) for group in GROUPS}
    groups["model"] = _unknown_models_together(groups["model"])
    days = _every_day(groups["day"], since, until)
    chart_data = {group: [_chart_point(row) for row in rows] for group, rows in {**groups, "day": days}.items()}
    chart_data["day_by_model"] = _stacked_by_model(
        [row["group"] for row in days], spend_by_day_and_model(org=membership.org, since=since, until=until))
    # Latency is not rolled up: it is read off the range's newest calls (log_totals' bound).
    latency = log_totals(org=membership.org, since=since, until=until, by_model=True)
    groups["model"] = [{**row, "latency": latency.models.get(row["group"])} for row in groups["model"]]
    return render_page(request, membership, "dashboard/spend.html", {
        "form": form,
        "groups": groups,
        "since": since,
        "until": until,
        "totals": {column: sum((row[column] for row in groups["day"]), Decimal(0) if column == "cost" else 0)
                   for column in SUMMED},
        "latency": latency,
        "csv_days": CALLS_CSV_DAYS,
        "scan_rows": TOTALS_SCAN_ROWS,
        "balance": credit_balance(org=membership.org),
        "chart_data": chart_data,
    }, status=200 if form.is_valid() else 400)


def _stacked_by_model(days: list[str], rows: list[dict]) -> dict:
    """Each day's spend of the range's dearest models, one series each, and of the others as one:
    what the day chart stacks. Costs stay decimal strings, as in the other series."""
    by_model: dict[str, Decimal] = {}
    for row in rows:
        by_model[row["model"]] = by_model.get(row["model"], Decimal(0)) + row["cost"]
    ranked = [model for model, cost in sorted(by_model.items(), key=lambda item: (-item[1], item[0])) if cost]
    named, others = ranked[:MODELS_STACKED], set(ranked[MODELS_STACKED:])
    other = f"{len(others)} other models"
    series = {model: dict.fromkeys(days, Decimal(0)) for model in named}
    if others:
        series[other] = dict.fromkeys(days, Decimal(0))
    for row in rows:
        name = row["model"] if row["model"] in series else other if row["model"] in others else None
        day = row["day"].isoformat()
        if name is not None and day in series[name]:
            series[name][day] += row["cost"]
    return {"days": days, "models": [{"model": name, "costs": [str(cost) for cost in costs.values()]}
                                     for name, costs in series.items()]}


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
    response = _attachment(HttpResponse(), f"spend-{membership.org.slug}-{group}")
    writer = csv.writer(response)
    writer.writerow(CSV_COLUMNS)
    for row in rows:
        writer.writerow([_cell(row[column]) for column in CSV_COLUMNS])
    return response


def _cell(value) -> object:
    """Key and team names are typed by users; a spreadsheet must not run one as a formula."""
    text = str(value)
    return "'" + text if isinstance(value, str) and text[:1] in ("=", "+", "-", "@", "\t", "\r") else value


@org_page()
def spend_calls_csv(request: HttpRequest, membership: Membership) -> HttpResponse:
    form = SpendForm(request.GET)
    if not form.is_valid():
        return HttpResponse("bad range\n", status=400, content_type="text/plain")
    since, until = form.range()
    if (until or timezone.now()) - since > timedelta(days=CALLS_CSV_DAYS):
        return HttpResponse(f"a range of at most {CALLS_CSV_DAYS} days\n", status=400, content_type="text/plain")
    # An asynchronous iterator: served under ASGI as it is read, where a synchronous one would
    # be read whole first.
    return _attachment(StreamingHttpResponse(_calls_csv(membership.org, since, until)),
                       f"calls-{membership.org.slug}")


def _attachment(response: HttpResponse, name: str) -> HttpResponse:
    """A CSV to download, its file named by what it holds and today's date."""
    response["Content-Type"] = "text/csv; charset=utf-8"
    response["Content-Disposition"] = f'attachment; filename="{name}-{timezone.now().strftime("%Y%m%d")}.csv"'
    return response


async def _calls_csv(org, since: datetime, until: datetime | None) -> AsyncIterator[str]:
    yield _csv_line(CALLS_CSV_COLUMNS)
    cursor = None
    while True:
        page = await sync_to_async(log_list)(org=org, since=since, until=until, cursor=cursor, limit=MAX_PAGE)
        yield "".join(_csv_line(_call_cells(row)) for row in page.rows)
        if page.next_cursor is None:
            return
        cursor = page.next_cursor


def _call_cells(row: RequestLog) -> list:
    return [row.created.isoformat(), row.request_id, row.key_prefix, _cell(row.key.name if row.key else ""),
            _cell(row.run_id), row.endpoint, _cell(row.model), row.deployment, row.status, row.error_code,
            row.prompt_tokens, row.completion_tokens, row.cached_tokens, money_string(row.cost), row.latency_ms,
            "" if row.ttft_ms is None else row.ttft_ms, row.cache, orjson.dumps(row.tags or []).decode()]


def _csv_line(cells) -> str:
    line = io.StringIO()
    csv.writer(line).writerow(cells)
    return line.getvalue()
