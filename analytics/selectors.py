"""Reads of the request log, runs, spend and export sinks.

Every function takes the org and filters by it first; a missing object and another org's object
raise the same Http404.

Spend is the request log's (the ledger's), read from its rollup: the daily ledger (DailySpend),
kept current every minute by analytics.services.spend_rollup, plus the log rows past the
rollup's horizon, so a read of months costs what a read of a day does and is still exact. Log
rows older than the retention period are pruned (a month's partition, or a day), once rolled up. Reading spend is
this module's job alone: billing never reads the log, and is handed
``settled_spend_micros`` where it rebuilds a budget's counter. What weighs spend against budgets
or credits (billing's) is read above both apps, in dashboard.selectors.
"""

import base64
import contextlib
import math
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal

import orjson
from django.db import connection, transaction
from django.db.models import (
    Case,
    Count,
    F,
    Func,
    IntegerField,
    Max,
    Min,
    OuterRef,
    Q,
    QuerySet,
    Subquery,
    Sum,
    TextField,
    Value,
    When,
)
from django.db.models.functions import TruncDate
from django.db.models.lookups import GreaterThan
from django.http import Http404
from django.utils import timezone

from analytics.ledger import read_with_snapshot
from analytics.models import DailySpend, ExportSink, RequestLog, SpendRollup
from analytics.partitions import request_id_window
from keys.models import Organization, Team, VirtualKey
from money import to_micros

MAX_PAGE = 500


class JSONArrayLength(Func):
    """The length of a JSON array column: PostgreSQL's jsonb_array_length, SQLite's json_array_length
    (the embedded default)."""

    function = "jsonb_array_length"
    output_field = IntegerField()

    def as_sqlite(self, compiler, connection, **extra):
        return super().as_sql(compiler, connection, function="json_array_length", **extra)


# A call fell back when more than one link was tried (as a run's fallback steps are counted).
FELL_BACK = GreaterThan(JSONArrayLength(F("attempts")), 1)
# How many of the newest log rows run_list looks through to find the most recent runs.
RUN_SCAN_ROWS = 20_000
SPEND_GROUPS = ("day", "key", "team", "model")
ZERO = Decimal("0")
_MICRO = Decimal("0.000001")


@dataclass
class LogPage:
    rows: list[RequestLog]
    next_cursor: str | None
    # The cursor of the page of newer rows, when there are any (a page reached by a cursor).
    newer_cursor: str | None = None


@dataclass(frozen=True)
class StepOutline:
    """A step of a run in the columns its run's totals and time axis are drawn from."""

    number: int  # from 1, in the order the calls were made
    pk: int
    key_id: int | None
    key_prefix: str
    created: datetime
    latency_ms: int
    status: int
    cost: Decimal
    prompt_tokens: int
    completion_tokens: int
    run_budget: Decimal | None
    error_code: str
    error_param: str
    fell_back: bool
    tool_calls: int
    error: str  # the message of a refusal at the run's level; empty for any other step


@dataclass
class RunSummary:
    run_id: str
    key: VirtualKey | None
    steps: list[RequestLog]
    steps_count: int
    fallback_steps: list[int]
    status: str
    spend: Decimal
    tool_calls_logged: int
    first: datetime
    last: datetime
    # The run's envelope (the first its calls were admitted under), and what stopped the run, if
    # anything did: "run_budget" (its envelope), "run_max_steps" or "loop_guard", with the
    # refusal's message.
    run_budget: Decimal | None
    stopped_by: str | None
    stop_reason: str
    # Every step of the run in a few columns (``steps`` may be a page of them), the number of the
    # first of ``steps``, and the run's first key's prefix at the time of its call.
    outline: list[StepOutline]
    first_step: int
    key_prefix: str


# A refused call's error code -> what stopped its run.
_RUN_STOPS = {"budget_exceeded": "run_budget", "run_max_steps": "run_max_steps", "run_loop_detected": "loop_guard"}


@dataclass
class RunListItem:
    run_id: str
    key_prefix: str
    steps_count: int
    spend: Decimal
    status: str
    started: datetime
    ended: datetime
    fallback_steps: int = 0
    failed_steps: int = 0


def _money(amount: Decimal | None) -> Decimal:
    return (amount or ZERO).quantize(_MICRO)


def _run_status(last_status: int) -> str:
    return "completed" if last_status < 400 else "failed"


# --- the log ------------------------------------------------------------------------------------

def _encode_cursor(row: RequestLog) -> str:
    raw = f"{row.created.isoformat()}|{row.pk}"
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def _decode_cursor(cursor: str) -> tuple[datetime, int]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        created_text, pk_text = raw.split("|")
        created, pk = datetime.fromisoformat(created_text), int(pk_text)
    except ValueError as exc:  # also binascii and Unicode errors, which are ValueErrors
        raise ValueError("malformed cursor") from exc
    if created.tzinfo is None or pk < 1:
        raise ValueError("malformed cursor")
    return created, pk


def log_rows(
    *,
    org: Organization,
    key_id: int | None = None,
    key_prefix: str | None = None,
    run: str | None = None,
    model: str | None = None,
    deployment: str | None = None,
    status: int | None = None,
    cache: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    request_id: str | None = None,
    status_from: int | None = None,
    status_below: int | None = None,
    fallback_only: bool = False,
    model_prefix: str | None = None,
    run_prefix: str | None = None,
    tag: str | None = None,
) -> QuerySet[RequestLog]:
    """The org's log rows that pass the filters, in no order; empty filters are ignored. Every
    filter has an index; a key's prefix is read as the key's id (``_key_of_prefix``). A tag is
    one of the row's ``tags`` (``"eu"``, or a metadata pair ``"customer:acme"``), exactly."""
    if key_prefix and key_id is None:
        key_id = _key_of_prefix(org, key_prefix)
    exact = {"key_id": key_id, "key_prefix": key_prefix, "run_id": run, "model": model, "deployment": deployment,
             "status": status, "cache": cache, "status__gte": status_from,
             "status__lt": status_below, "created__gte": since, "created__lt": until,
             "model__startswith": model_prefix, "run_id__startswith": run_prefix}
    rows = RequestLog.objects.filter(org=org, **{lookup: value for lookup, value in exact.items()
                                                 if value not in (None, "")})
    if request_id:
        rows = rows.filter(request_id_rows(RequestLog.objects.filter(org=org), request_id))
    if fallback_only:
        rows = rows.filter(FELL_BACK)
    if tag and _no_row_has(tag):
        return rows.none()
    if tag and connection.vendor == "postgresql":
        rows = rows.filter(tags__contains=[tag])
    elif tag:  # SQLite (the embedded default) has no JSON containment: one of the list's values.
        rows = rows.extra(where=["EXISTS (SELECT 1 FROM json_each(analytics_requestlog.tags) WHERE value = %s)"],
                          params=[tag])
    return rows


def log_list(*, org: Organization, cursor: str | None = None, newer_than: str | None = None, limit: int = 50,
             **filters) -> LogPage:
    """The org's log, newest first, one page at a time, filtered as ``log_rows`` filters.

    Pages are cut by keyset on (created, id), never by offset, so page 10,000 costs what page 1
    costs and rows arriving meanwhile neither repeat nor shift rows between pages. ``cursor``
    asks for the rows older than a page's last, ``newer_than`` for those newer than its first.
    """
    if limit < 1:
        raise ValueError("limit must be at least 1")
    limit = min(limit, MAX_PAGE)
    rows = log_rows(org=org, **filters).select_related("key")
    if newer_than:
        return _newer_page(rows, newer_than, limit)
    if cursor:
        created, pk = _decode_cursor(cursor)
        # The redundant `created <= cursor` bounds the index range scan; the OR alone would not.
        rows = rows.filter(created__lte=created).filter(Q(created__lt=created) | Q(pk__lt=pk))
    page = list(rows.order_by("-created", "-id")[: limit + 1])
    newer = _encode_cursor(page[0]) if cursor and page else None
    if len(page) > limit:
        return LogPage(rows=page[:limit], next_cursor=_encode_cursor(page[limit - 1]), newer_cursor=newer)
    return LogPage(rows=page, next_cursor=None, newer_cursor=newer)


def _newer_page(rows: QuerySet, cursor: str, limit: int) -> LogPage:
    """The ``limit`` rows just newer than the cursor's, newest first; older ones always follow."""
    created, pk = _decode_cursor(cursor)
    rows = rows.filter(created__gte=created).filter(Q(created__gt=created) | Q(pk__gt=pk))
    page = list(rows.order_by("created", "id")[: limit + 1])
    more_newer = len(page) > limit
    page = page[:limit][::-1]
    return LogPage(rows=page, next_cursor=_encode_cursor(page[-1]) if page else cursor,
                   newer_cursor=_encode_cursor(page[0]) if more_newer else None)


def _key_of_prefix(org: Organization, prefix: str) -> int | None:
    """The org's key with this prefix, whose rows the (org, key, created) index finds; the
    prefix stays a filter too (a rotated key's older rows carry its older prefix). A prefix no
    key has now (rotated away) is looked for in the rows themselves."""
    if _no_row_has(prefix):
        return None
    return VirtualKey.objects.filter(org=org, prefix=prefix).values_list("pk", flat=True).first()


def _no_row_has(text: str) -> bool:
    """PostgreSQL's text holds no NUL: no row has such a value, and asking for one fails the query."""
    return "\x00" in text


def _request_id_lookups(request_id: str) -> list[dict]:
    """Where to look for a request id's rows, in turn: within the window of ``created`` its id
    holds (analytics.partitions.request_id_window), where PostgreSQL reads one or two months'
    partitions; then, for an id of the older shape (its "time" may be anywhere), every month."""
    window = request_id_window(request_id)
    everywhere = {"request_id": request_id}
    return [{**everywhere, "created__range": window}, everywhere] if window else [everywhere]


def request_id_rows(rows: QuerySet[RequestLog], request_id: str) -> Q:
    """The condition of the rows of this request id: the first of its lookups that finds one of
    ``rows`` (by the unique (request_id, created) index), the last if none does."""
    *first, last = _request_id_lookups(request_id)
    found = next((where for where in first if rows.filter(**where).values("pk")[:1]), last)
    return Q(**found)


def log_get(*, org: Organization, request_id: str) -> RequestLog:
    if not _no_row_has(request_id):
        rows = RequestLog.objects.select_related("key", "team").filter(org=org)
        for where in _request_id_lookups(request_id):
            with contextlib.suppress(RequestLog.DoesNotExist):
                return rows.get(**where)
    raise Http404("No such request.")


@dataclass(frozen=True)
class LogTotals:
    """What the calls that pass a log search did: how many, how many failed, their cost, tokens
    and latency, and the calls and failures of each hour (``hours``, oldest first, only the
    hours with calls); ``models``: the same of each model, when asked for, the most called
    first. ``narrowed_to``: where the search's window had more calls of the org than totals
    read (``TOTALS_SCAN_ROWS``), the start of its part that holds its newest that many."""

    calls: int
    errors: int
    cost: Decimal
    prompt_tokens: int
    completion_tokens: int
    p50_ms: int | None
    p95_ms: int | None
    oldest: datetime | None = None
    narrowed_to: datetime | None = None
    hours: list[tuple[datetime, int, int]] = field(default_factory=list)
    models: dict[str, "LogTotals"] = field(default_factory=dict)


# The most log rows a search's totals read, whatever its filters: the window is narrowed to the
# org's newest this many calls in it (measured in bench/RESULTS.md, "Log search totals").
TOTALS_SCAN_ROWS = 50_000
# The rows read once (MATERIALIZED), then one sort for both percentiles of all of them, and the
# hours (and models) grouped from the same rows: one statement.
_TOTALS_SQL = """
WITH counted AS MATERIALIZED ({rows})
SELECT count(*), count(*) FILTER (WHERE status >= 400), sum(cost), sum(prompt_tokens), sum(completion_tokens),
       percentile_disc(ARRAY[0.5, 0.95]) WITHIN GROUP (ORDER BY latency_ms), min(created),
       (SELECT json_agg(json_build_array(extract(epoch FROM hour)::bigint, calls, errors))
        FROM (SELECT date_trunc('hour', created) AS hour, count(*) AS calls,
                     count(*) FILTER (WHERE status >= 400) AS errors
              FROM counted GROUP BY 1) AS by_hour),
       {models}
FROM counted
"""
_MODELS_SQL = """(SELECT json_agg(json_build_array(model, calls, errors, cost::text, prompt_tokens, completion_tokens,
                                   latency) ORDER BY calls DESC, model)
        FROM (SELECT model, count(*) AS calls, count(*) FILTER (WHERE status >= 400) AS errors, sum(cost) AS cost,
                     sum(prompt_tokens) AS prompt_tokens, sum(completion_tokens) AS completion_tokens,
                     percentile_disc(ARRAY[0.5, 0.95]) WITHIN GROUP (ORDER BY latency_ms) AS latency
              FROM counted GROUP BY model) AS by_model)"""


def _totals_of(calls, errors, cost, prompt_tokens, completion_tokens, latency) -> LogTotals:
    p50_ms, p95_ms = latency or (None, None)
    return LogTotals(calls=calls, errors=errors, cost=_money(Decimal(cost or 0)), prompt_tokens=int(prompt_tokens or 0),
                     completion_tokens=int(completion_tokens or 0), p50_ms=p50_ms, p95_ms=p95_ms)


def percentiles(latencies: list[int]) -> tuple[int, int] | None:
    """The median and 95th percentile of the values as PostgreSQL's percentile_disc takes them (the
    first value whose position in the order reaches the fraction), for the databases without it."""
    if not latencies:
        return None
    ordered = sorted(latencies)
    return ordered[max(0, math.ceil(0.5 * len(ordered)) - 1)], ordered[max(0, math.ceil(0.95 * len(ordered)) - 1)]


def _totals_in_python(rows: list[dict], by_model: bool) -> tuple[LogTotals, list, dict]:
    """log_totals' aggregate over rows already read (at most its bound), where the database has
    no percentile_disc (SQLite, the embedded default)."""

    def totals(group: list[dict]) -> LogTotals:
        return _totals_of(len(group), sum(1 for row in group if row["status"] >= 400),
                          sum((row["cost"] for row in group), ZERO), sum(row["prompt_tokens"] for row in group),
                          sum(row["completion_tokens"] for row in group),
                          percentiles([row["latency_ms"] for row in group]))

    hours: dict[datetime, list[int]] = {}
    models: dict[str, list[dict]] = {}
    for row in rows:
        hour = hours.setdefault(row["created"].astimezone(UTC).replace(minute=0, second=0, microsecond=0), [0, 0])
        hour[0] += 1
        hour[1] += row["status"] >= 400
        if by_model:
            models.setdefault(row["model"], []).append(row)
    by_calls = sorted(models.items(), key=lambda item: (-len(item[1]), item[0]))
    return (totals(rows), sorted((hour, calls, errors) for hour, (calls, errors) in hours.items()),
            {model: totals(group) for model, group in by_calls})


def log_totals(*, org: Organization, scan: int = TOTALS_SCAN_ROWS, by_model: bool = False, **filters) -> LogTotals:
    """The totals of a log search (``log_rows``' filters) in one aggregate query, reading at
    most ``scan`` rows whatever the filters: first the org's newest ``scan`` calls in the window
    are found (a walk of the (org, created, id) index), and if there are that many, the window
    starts at the oldest of them, and at the smallest id among them too: every row of that part
    has an id at least that, and the primary key's range, in the table's order, is what the
    planner takes where the org's own index looks dearer to it (an org that fills the table)."""
    window = log_rows(org=org, since=filters.get("since"), until=filters.get("until"))
    newest = window.order_by("-created", "-id").values("created", "id")[:scan].aggregate(
        count=Count("id"), oldest=Min("created"), lowest_id=Min("id"))
    narrowed_to = newest["oldest"] if newest["count"] == scan else None
    rows = log_rows(org=org, **filters)
    if narrowed_to is not None:
        rows = log_rows(org=org, **{**filters, "since": narrowed_to}).filter(id__gte=newest["lowest_id"])
    rows = rows.values(
        "created", "status", "cost", "prompt_tokens", "completion_tokens", "latency_ms", "model")
    if connection.vendor != "postgresql":
        read = list(rows[:scan])
        totals, hours, models = _totals_in_python(read, by_model)
        return replace(totals, oldest=min((row["created"] for row in read), default=None), narrowed_to=narrowed_to,
                       hours=hours, models=models)
    sql, params = rows.query.sql_with_params()
    with connection.cursor() as cursor:
        cursor.execute(_TOTALS_SQL.format(rows=sql, models=_MODELS_SQL if by_model else "NULL"), params)
        calls, errors, cost, prompt_tokens, completion_tokens, latency, oldest, hours, models = cursor.fetchone()
    totals = _totals_of(calls, errors, cost, prompt_tokens, completion_tokens, latency)
    return replace(
        totals, oldest=oldest, narrowed_to=narrowed_to,
        hours=[(datetime.fromtimestamp(hour, UTC), hour_calls, hour_errors)
               for hour, hour_calls, hour_errors in sorted(_json(hours) or [])],
        models={model: _totals_of(*values) for model, *values in _json(models) or []})


def _json(value):
    # psycopg decodes json itself; other drivers hand back its text.
    return orjson.loads(value) if isinstance(value, str) else value


# --- runs ---------------------------------------------------------------------------------------

def run_get(*, org: Organization, run_id: str, offset: int = 0, limit: int | None = None) -> RunSummary:
    """A run replayed: its calls in the order they were made, which fell back, what it cost.

    The totals are the whole run's, read from a few columns of every step (``outline``); only the
    steps shown (``limit`` of them from ``offset``, all without a limit) are read whole, so a run
    of thousands of steps is drawn a page at a time.
    """
    outline = _run_outline(org, run_id) if run_id and not _no_row_has(run_id) else []
    if not outline:
        raise Http404("No such run.")
    shown = outline[offset:offset + limit] if limit is not None else outline[offset:]
    steps = _run_steps(org, run_id, shown, whole=limit is None and offset == 0)
    stop = next((step for step in outline if step.error_param == "run" and step.error_code in _RUN_STOPS), None)
    return RunSummary(
        run_id=run_id,
        key=VirtualKey.objects.filter(org=org, pk=outline[0].key_id).first() if outline[0].key_id else None,
        steps=steps,
        steps_count=len(outline),
        fallback_steps=[step.number for step in outline if step.fell_back],
        status=_run_status(outline[-1].status),
        spend=_money(sum((step.cost for step in outline), ZERO)),
        tool_calls_logged=sum(1 for step in outline if step.tool_calls),
        first=outline[0].created,
        last=outline[-1].created,
        run_budget=next((step.run_budget for step in outline if step.run_budget is not None), None),
        stopped_by=_RUN_STOPS[stop.error_code] if stop else None,
        stop_reason=stop.error if stop else "",
        outline=outline,
        first_step=offset + 1,
        key_prefix=outline[0].key_prefix,
    )


_OUTLINE_FIELDS = ("pk", "key_id", "key_prefix", "created", "latency_ms", "status", "cost", "prompt_tokens",
                   "completion_tokens", "run_budget", "error_code", "error_param")


def _run_outline(org: Organization, run_id: str) -> list[StepOutline]:
    """Every step of the run in order, as the few columns its totals and time axis need: one pass
    of the (org, run_id, created) index with no JSON or bodies built into rows."""
    rows = (
        RequestLog.objects.filter(org=org, run_id=run_id)
        .order_by("created", "id")
        .annotate(attempt_count=JSONArrayLength(F("attempts")), tool_call_count=JSONArrayLength(F("tool_calls")),
                  # Only a refusal that stopped the run has its message read.
                  stop_error=Case(When(error_param="run", then=F("error")), default=Value(""),
                                  output_field=TextField()))
        .values_list(*_OUTLINE_FIELDS, "attempt_count", "tool_call_count", "stop_error")
    )
    return [
        StepOutline(number, *values[:len(_OUTLINE_FIELDS)], fell_back=values[-3] > 1, tool_calls=values[-2],
                    error=values[-1])
        for number, values in enumerate(rows, start=1)
    ]


def _run_steps(org: Organization, run_id: str, shown: list[StepOutline], *, whole: bool) -> list[RequestLog]:
    """The shown steps' rows, whole; a page of them leaves out the bodies, which its page does not show."""
    if not shown:
        return []
    rows = RequestLog.objects.filter(org=org, run_id=run_id).select_related("key").order_by("created", "id")
    if whole:
        return list(rows)
    # Bounded by the page's first and last call too, so only their months' partitions are read.
    return list(rows.filter(pk__in=[step.pk for step in shown], created__gte=shown[0].created,
                            created__lte=shown[-1].created).defer("request_body", "response_body", "prompt_meta",
                                                                 "tools_offered"))


def run_list(
    *, org: Organization, key_id: int | None = None, limit: int = 50, run_prefix: str | None = None,
    active_before: datetime | None = None,
) -> list[RunListItem]:
    """The org's most recently active runs, newest first; with ``active_before``, the runs whose
    last call was before that moment (the next page, from the last run of a page).

    Grouping every row of a busy org by run would read the whole log; the newest rows are read
    instead (through the (org, created, id) index) until enough distinct runs are found.
    """
    if limit < 1:
        raise ValueError("limit must be at least 1")
    rows = RequestLog.objects.filter(org=org).exclude(run_id="")
    if key_id is not None:
        rows = rows.filter(key_id=key_id)
    if run_prefix:
        rows = rows.filter(run_id__startswith=run_prefix)
    if active_before is not None:
        rows = rows.filter(created__lt=active_before)
    # Twice as many for a later page: a run met below its start may have been on an earlier page.
    wanted = limit * 2 if active_before is not None else limit
    recent: dict[str, int] = {}  # each run met, in order, with the id of a row of it
    # In a transaction, so the cursor is read a chunk at a time: outside one, Django declares it
    # WITH HOLD, which makes PostgreSQL read all RUN_SCAN_ROWS rows before the first is fetched.
    with transaction.atomic(using=rows.db):
        for run_id, pk in rows.order_by("-created", "-id").values_list("run_id", "pk")[:RUN_SCAN_ROWS].iterator(
            chunk_size=1000
        ):
            if run_id not in recent:
                recent[run_id] = pk
                if len(recent) == wanted:
                    break
    summaries = _run_summaries(org, recent)
    items = [
        RunListItem(
            run_id=run_id,
            key_prefix=summaries[run_id]["key_prefix"],
            steps_count=summaries[run_id]["steps_count"],
            spend=_money(summaries[run_id]["spend"]),
            status=_run_status(summaries[run_id]["last_status"]),
            started=summaries[run_id]["started"],
            ended=summaries[run_id]["ended"],
            fallback_steps=summaries[run_id]["fallback_steps"],
            failed_steps=summaries[run_id]["failed_steps"],
        )
        for run_id in recent
    ]
    if active_before is not None:
        items = [item for item in items if item.ended < active_before]
    return items[:limit]


def _run_summaries(org: Organization, recent: dict[str, int]) -> dict[str, dict]:
    """Each run's totals in one pass over its steps, and its last status and first key by two
    index lookups a run (a subquery in the totals' query would be grouped by, so run once for
    every step), from one row of each run (``recent``'s ids)."""
    summaries = {
        summary["run_id"]: summary
        for summary in RequestLog.objects.filter(org=org, run_id__in=list(recent))
        .values("run_id")
        .annotate(
            steps_count=Count("id"),
            spend=Sum("cost"),
            started=Min("created"),
            ended=Max("created"),
            fallback_steps=Count("id", filter=FELL_BACK),
            failed_steps=Count("id", filter=Q(status__gte=400)),
        )
        .order_by()
    }
    in_run = RequestLog.objects.filter(org=org, run_id=OuterRef("run_id"))
    for run_id, last_status, key_prefix in RequestLog.objects.filter(org=org, pk__in=recent.values()).annotate(
        last_status=Subquery(in_run.order_by("-created", "-id").values("status")[:1]),
        first_key_prefix=Subquery(in_run.order_by("created", "id").values("key_prefix")[:1]),
    ).values_list("run_id", "last_status", "first_key_prefix"):
        summaries[run_id].update(last_status=last_status, key_prefix=key_prefix)
    return summaries


# --- spend --------------------------------------------------------------------------------------

def _first_day_on_or_after(moment: datetime) -> date:
    moment = moment.astimezone(UTC)
    if moment.time() == time(0) or moment.date() == date.max:
        # The calendar's last day has no next one; no ledger row can be of it anyway.
        return moment.date()
    return moment.date() + timedelta(days=1)


def _midnight(day: date) -> datetime:
    return datetime.combine(day, time(0), tzinfo=UTC)


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def not_rolled_up(state) -> Q:
    """The log rows past the rollup's horizon (analytics.models.SpendRollup): not yet in DailySpend."""
    return Q(id__gt=state.floor_id, inserted__gte=state.horizon)


def _rollup_state() -> SpendRollup:
    """How far the log is rolled up; with no rollup yet, nothing is (every row is past it)."""
    return SpendRollup.objects.filter(pk=1).first() or SpendRollup(horizon=_EPOCH, floor_id=0, last_read=_EPOCH)


_LOG_GROUP = {"day": TruncDate("created", tzinfo=UTC), "key": F("key_id"), "team": F("team_id"), "model": F("model")}
_LEDGER_GROUP = {"day": F("day"), "key": F("key_id"), "team": F("team_id"), "model": F("model")}
# Two groupings at once, grouped by both: a group is then a (day, model) pair.
_LOG_GROUP["day_model"] = (_LOG_GROUP["day"], _LOG_GROUP["model"])
_LEDGER_GROUP["day_model"] = (_LEDGER_GROUP["day"], _LEDGER_GROUP["model"])
_TOTALS = ("cost", "calls", "errors", "prompt_tokens", "completion_tokens")
# The ledger's totals of its rows, and the same read from log rows.
_LEDGER_SUMS = {"calls": Sum("calls"), "errors": Sum("errors")}
_LOG_COUNTS = {"calls": Count("id"), "errors": Count("id", filter=Q(status__gte=400))}


def _grouped(rows: QuerySet, group, *, counts: dict) -> dict:
    totals = {"cost": Sum("cost"), **counts, "prompt_tokens": Sum("prompt_tokens"),
              "completion_tokens": Sum("completion_tokens")}
    if group is None:
        found = rows.aggregate(**totals)
        return {None: found} if found["calls"] else {}
    if isinstance(group, tuple):
        names = [f"group_{number}" for number in range(len(group))]
        return {tuple(row.pop(name) for name in names): row
                for row in rows.values(**dict(zip(names, group, strict=True))).annotate(**totals).order_by()}
    return {row.pop("group"): row for row in rows.values(group=group).annotate(**totals).order_by()}


def _add(merged: dict, more: dict, sign: int = 1) -> None:
    for group, totals in more.items():
        into = merged.setdefault(group, dict.fromkeys(_TOTALS, 0))
        for name in _TOTALS:
            into[name] = (into[name] or 0) + sign * (totals[name] or 0)


def _spend(
    *,
    org_id: int,
    group_by: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    key_ids: list[int] | None = None,
    team_id: int | None = None,
) -> dict:
    """Spend totals by group: the daily ledger (DailySpend) for the days that start in the
    window, corrected by the rolled-up log rows of the window's partial first and last days, plus
    the log rows not rolled up yet (the tail past the rollup's horizon). Exact, and never a sum of
    months of log rows: the ledger has a row per day and group, the tail is the last minute or so.

    A pruned day's log rows are gone, so a window resolves it to a whole day (counted if it starts
    in the window). Read at one snapshot (read_with_snapshot), the parts see the same rollup.
    """
    if since is not None and until is not None and since >= until:
        return {}
    def read() -> dict:
        return _spend_at_one_snapshot(org_id, group_by, since, until, key_ids, team_id)
    # Inside a transaction (a counter's rebuild reads in its own snapshot already) it is read as is.
    return read() if connection.in_atomic_block else read_with_snapshot(read)[0]


def _spend_at_one_snapshot(org_id: int, group_by: str | None, since: datetime | None, until: datetime | None,
                           key_ids: list[int] | None, team_id: int | None) -> dict:
    state = _rollup_state()
    logs = RequestLog.objects.filter(org_id=org_id)
    ledger = DailySpend.objects.filter(org_id=org_id)
    if key_ids is not None:
        logs, ledger = logs.filter(key_id__in=key_ids), ledger.filter(key_id__in=key_ids)
    if team_id is not None:
        logs, ledger = logs.filter(team_id=team_id), ledger.filter(team_id=team_id)
    log_group = _LOG_GROUP[group_by] if group_by else None
    tail = logs.filter(not_rolled_up(state))
    rolled = logs.exclude(not_rolled_up(state))
    edges = []  # (rolled rows of a partial day, +1 to add them or -1 to take them off)
    if since is not None:
        tail, first = tail.filter(created__gte=since), _first_day_on_or_after(since)
        ledger = ledger.filter(day__gte=first)
        if since < _midnight(first):
            edges.append((rolled.filter(created__gte=since, created__lt=_midnight(first)), 1))
    if until is not None:
        tail, last = tail.filter(created__lt=until), _first_day_on_or_after(until)
        ledger = ledger.filter(day__lt=last)
        if until < _midnight(last):
            edges.append((rolled.filter(created__gte=until, created__lt=_midnight(last)), -1))
    merged = _grouped(ledger, _LEDGER_GROUP[group_by] if group_by else None, counts=_LEDGER_SUMS)
    for rows, sign in edges:
        _add(merged, _grouped(rows, log_group, counts=_LOG_COUNTS), sign)
    _add(merged, _grouped(tail, log_group, counts=_LOG_COUNTS))
    return {group: totals for group, totals in merged.items() if totals["calls"]}


def spend_total(
    *,
    org_id: int,
    since: datetime | None = None,
    until: datetime | None = None,
    key_id: int | None = None,
    team_id: int | None = None,
) -> Decimal:
    """Settled spend of an org (or one of its keys or teams) in a window, pruned days included."""
    totals = _spend(org_id=org_id, since=since, until=until, team_id=team_id,
                    key_ids=None if key_id is None else [key_id])
    return _money(totals[None]["cost"]) if totals else _money(ZERO)


def settled_spend_micros(*, org_id: int, since: datetime | None, key_id: int | None = None,
                         team_id: int | None = None) -> int:
    """Settled spend of an org (or one of its keys or teams) since a moment (all time with None),
    in integer micro-dollars, pruned days included: what a budget's counter is rebuilt to.
    Synchronous (it queries the database); the gateway runs it in a thread."""
    return to_micros(spend_total(org_id=org_id, since=since, key_id=key_id, team_id=team_id))


def run_spend_micros(*, org_id: int, key_id: int, run_id: str) -> int:
    """Settled spend of a key's run, in integer micro-dollars: what a run's envelope counter is
    rebuilt to. A run lives within the log's retention: its pruned days are not counted."""
    total = RequestLog.objects.filter(org_id=org_id, run_id=run_id, key_id=key_id).aggregate(total=Sum("cost"))
    return to_micros(total["total"] or ZERO)


def _spend_label(group_by: str, group, names: dict) -> str:
    if group_by == "day":
        return group.isoformat()
    if group_by == "model":
        return group
    return names.get(group, "(no key)" if group_by == "key" else "(no team)")


def spend_rows(
    *, org: Organization, group_by: str, since: datetime | None = None, until: datetime | None = None
) -> list[dict]:
    """Spend rows ``{"group", "cost", "calls", "prompt_tokens", "completion_tokens"}`` by day, key,
    team or model; days in date order, the others most expensive first."""
    if group_by not in SPEND_GROUPS:
        raise ValueError(f"group_by must be one of {', '.join(SPEND_GROUPS)}, not {group_by!r}")
    totals = _spend(org_id=org.pk, group_by=group_by, since=since, until=until)
    names: dict = {}
    if group_by == "key":
        names = {key.pk: f"{key.name} ({key.prefix})" for key in VirtualKey.objects.filter(org=org, pk__in=totals)}
    if group_by == "team":
        names = dict(Team.objects.filter(org=org, pk__in=totals).values_list("pk", "name"))
    rows = [
        {
            "group": _spend_label(group_by, group, names),
            "cost": _money(values["cost"]),
            "calls": int(values["calls"] or 0),
            "prompt_tokens": int(values["prompt_tokens"] or 0),
            "completion_tokens": int(values["completion_tokens"] or 0),
        }
        for group, values in totals.items()
    ]
    if group_by == "day":
        return sorted(rows, key=lambda row: row["group"])
    return sorted(rows, key=lambda row: (-row["cost"], row["group"]))


def spend_by_day_and_model(*, org: Organization, since: datetime | None = None,
                           until: datetime | None = None) -> list[dict]:
    """Spend rows ``{"day", "model", "cost", "calls", "prompt_tokens", "completion_tokens"}`` of
    each model each day (read as ``spend_rows`` reads), by day, then the dearest first."""
    totals = _spend(org_id=org.pk, group_by="day_model", since=since, until=until)
    rows = [{"day": day, "model": model, "cost": _money(values["cost"]), "calls": int(values["calls"] or 0),
             "prompt_tokens": int(values["prompt_tokens"] or 0),
             "completion_tokens": int(values["completion_tokens"] or 0)}
            for (day, model), values in totals.items()]
    return sorted(rows, key=lambda row: (row["day"], -row["cost"], row["model"]))


@dataclass(frozen=True)
class KeyTotals:
    cost: Decimal
    calls: int
    errors: int  # of the calls, those answered with a status of 400 or above


def use_by_key(*, org: Organization, key_ids: list[int], since: datetime | None) -> dict[int, KeyTotals]:
    """Spend, calls and failed calls of each of these keys of the org since a moment (all time
    with None), read as spend is (the daily ledger and the minute past it): as flat at millions
    of rows as at ten. Zero for a key that made no call."""
    totals = _spend(org_id=org.pk, group_by="key", since=since, key_ids=key_ids)
    return {key_id: KeyTotals(cost=_money(totals.get(key_id, {}).get("cost")),
                              calls=int(totals.get(key_id, {}).get("calls") or 0),
                              errors=int(totals.get(key_id, {}).get("errors") or 0))
            for key_id in key_ids}


# --- export sinks ---------------------------------------------------------------------------------

def sink_list(*, org: Organization) -> QuerySet[ExportSink]:
    return ExportSink.objects.filter(org=org).order_by("created", "id")


def sink_get(*, org: Organization, pk) -> ExportSink:
    try:
        return ExportSink.objects.select_related("org").get(org=org, pk=int(pk))
    except (ValueError, TypeError, ExportSink.DoesNotExist) as exc:
        raise Http404("No such export sink.") from exc


def sinks_due(*, now: datetime | None = None) -> QuerySet[ExportSink]:
    """Enabled sinks of every org that are not backing off nor being exported right now."""
    now = now or timezone.now()
    return (
        ExportSink.objects.filter(enabled=True)
        .filter(Q(next_attempt__isnull=True) | Q(next_attempt__lte=now))
        .filter(Q(lease_until__isnull=True) | Q(lease_until__lt=now))
        .order_by("pk")
    )


@dataclass(frozen=True)
class SinkHealth:
    sink_id: int
    type: str
    consecutive_failures: int
    lag_s: float


def sinks_health(*, now: datetime | None = None) -> list[SinkHealth]:
    """Every enabled sink of every org (an operator's read, for ``/metrics``): its failures in a
    row and its export lag, how long the oldest row of its outbox has waited (0 when it is empty)."""
    now = now or timezone.now()
    oldest = RequestLog.objects.filter(org_id=OuterRef("org_id"), id__gt=OuterRef("last_exported_id")).order_by("id")
    sinks = (ExportSink.objects.filter(enabled=True).annotate(oldest=Subquery(oldest.values("inserted")[:1]))
             .order_by("pk").values_list("pk", "type", "consecutive_failures", "oldest"))
    return [SinkHealth(pk, type, failures, max(0.0, (now - waiting).total_seconds()) if waiting else 0.0)
            for pk, type, failures, waiting in sinks]
