"""The support staff's admin for the request log, its daily rollup and the export sinks.

The request log is the ledger: staff may read it and its rollup, never add, edit or delete a row.
"""

from datetime import timedelta
from functools import cached_property

from django.contrib import admin
from django.core.paginator import Paginator
from django.db.models import Q, QuerySet
from django.http import HttpRequest
from django.utils import timezone
from django.utils.html import format_html_join

from analytics.models import DailySpend, ExportSink, RequestLog
from analytics.selectors import request_id_rows
from keys.admin import PastedKeySearchMixin, ReadOnlyAdminMixin, pasted_key_prefix
from keys.models import AuditEvent, Organization, VirtualKey
from money import usd_text


@admin.display(description="cost", ordering="cost")
def cost_usd(row: RequestLog | DailySpend) -> str:
    return usd_text(row.cost)


def in_every_org(*conditions: Q, **exact) -> Q:
    """Rows of any org with these values, in a form the log's indexes serve: they all lead with
    the org, so support's searches across tenants name every org (PostgreSQL descends the index
    once per org) where no single-column index covers the column. A value most rows have is still
    read newest first along the primary key, as the planner sees fit."""
    return Q(*conditions, org_id__in=list(Organization.objects.values_list("pk", flat=True)), **exact)


class RecentValuesFilter(admin.SimpleListFilter):
    """Offers the values seen in the latest rows of the log.

    The stock filter runs a DISTINCT over the whole column, which scans every partition of a
    log that grows by millions of rows; the latest rows name the values support looks for.
    """

    field_name = ""
    sample_size = 5000

    def lookups(self, request: HttpRequest, model_admin) -> list[tuple[str, str]]:
        latest = RequestLog.objects.order_by("-id").values_list(self.field_name, flat=True)[: self.sample_size]
        values = sorted({str(value) for value in latest if value != ""})
        return [(value, value) for value in values]

    def queryset(self, request: HttpRequest, queryset: QuerySet[RequestLog]) -> QuerySet[RequestLog]:
        if self.value() is None:
            return queryset
        return queryset.filter(in_every_org(**{self.field_name: self.value()}))


class StatusFilter(RecentValuesFilter):
    title = "status"
    parameter_name = "status"
    field_name = "status"


class ModelFilter(RecentValuesFilter):
    title = "model"
    parameter_name = "model"
    field_name = "model"


class DeploymentFilter(RecentValuesFilter):
    title = "deployment"
    parameter_name = "deployment"
    field_name = "deployment"


class CacheFilter(admin.SimpleListFilter):
    title = "cache"
    parameter_name = "cache"

    def lookups(self, request: HttpRequest, model_admin) -> list[tuple[str, str]]:
        return [("hit", "hit"), ("miss", "miss"), ("skip", "skip")]

    def queryset(self, request: HttpRequest, queryset: QuerySet[RequestLog]) -> QuerySet[RequestLog]:
        if self.value() is None:
            return queryset
        return queryset.filter(in_every_org(cache=self.value()))


class SinceFilter(admin.SimpleListFilter):
    """The latest hour, day, week or month of the log: a bound, where date_hierarchy's links cost
    a DISTINCT over the months of every row and a MIN/MAX of the whole table."""

    title = "since"
    parameter_name = "since"
    windows = {"1h": ("Last hour", timedelta(hours=1)), "24h": ("Last 24 hours", timedelta(days=1)),
               "7d": ("Last 7 days", timedelta(days=7)), "30d": ("Last 30 days", timedelta(days=30))}

    def lookups(self, request: HttpRequest, model_admin) -> list[tuple[str, str]]:
        return [(value, label) for value, (label, _) in self.windows.items()]

    def queryset(self, request: HttpRequest, queryset: QuerySet[RequestLog]) -> QuerySet[RequestLog]:
        if self.value() not in self.windows:
            return queryset
        return queryset.filter(in_every_org(created__gte=timezone.now() - self.windows[self.value()][1]))


class BoundedCountPaginator(Paginator):
    """Counts the rows of a list up to ``COUNT_LIMIT`` and no further: a COUNT of a log of millions
    of rows (or of a filter most rows match) costs seconds; nobody pages past the first ten.

    The rows counted are the list's first ones, in its order: the newest, the pages the list
    itself reads (and finds in memory), not the oldest a sequential scan would start with."""

    COUNT_LIMIT = 1_000

    @cached_property
    def count(self) -> int:
        return self.object_list[: self.COUNT_LIMIT].count()

    @property
    def capped(self) -> bool:
        return self.count >= self.COUNT_LIMIT


def log_search(term: str) -> Q:
    """The rows a pasted term names, each by an index: its request id (unique), the calls of the
    key of that prefix (by the key's org and id; a prefix rotated away, by the key its rotation
    was audited on: the calls made with it), or its run or model in any org."""
    term = pasted_key_prefix(term)
    found = request_id_rows(RequestLog.objects.all(), term) | in_every_org(Q(run_id=term) | Q(model=term))
    for org_id, key_id in VirtualKey.objects.filter(prefix=term).values_list("org_id", "pk"):
        found |= Q(org_id=org_id, key_id=key_id)
    rotated = AuditEvent.objects.filter(action="key.rotate", data__old_prefix=term)
    for org_id, key_id in rotated.values_list("org_id", "target_id"):
        found |= Q(org_id=org_id, key_id=int(key_id), key_prefix=term)
    return found


@admin.register(RequestLog)
class RequestLogAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    # What support reads first, first, and all of it in 1366 px beside the filters; the run,
    # deployment and cache are on the row's page and in the filters.
    list_display = ["created", "status", "model", cost_usd, "latency", "request_id", "org", "key_prefix"]
    list_select_related = ["org"]
    list_filter = [SinceFilter, StatusFilter, CacheFilter, ModelFilter, DeploymentFilter]
    # Exact matches, each read by an index (log_search): support pastes whole ids and keys.
    search_fields = ["request_id"]
    search_help_text = "A request id, a key (as the dashboard shows it, or its prefix), a run id or a model: exactly."
    # Newest first by the primary key, the only index of the log that does not lead with the org;
    # no column sorts the list (each sort would order every row of the log).
    ordering = ["-id"]
    sortable_by = []
    paginator = BoundedCountPaginator
    # A COUNT(*) of the whole log on every page would cost more than the page itself.
    show_full_result_count = False

    def get_search_results(self, request: HttpRequest, queryset: QuerySet, search_term: str):
        if not search_term.strip():
            return queryset, False
        return queryset.filter(log_search(search_term)), False

    @admin.display(description="latency", ordering="latency_ms")
    def latency(self, row: RequestLog) -> str:
        return f"{row.latency_ms} ms"


SECRET_CONFIG_WORDS = ("secret", "key", "token", "password")


@admin.register(ExportSink)
class ExportSinkAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = [
        "org", "type", "enabled", "healthy", "consecutive_failures", "short_last_error", "last_success", "next_attempt",
    ]
    list_select_related = ["org"]
    list_filter = ["type", "enabled"]
    search_fields = ["org__name", "org__slug"]
    fields = [
        "org", "type", "enabled", "config_without_secrets", "last_exported_id", "consecutive_failures",
        "last_error", "last_success", "next_attempt", "created",
    ]
    readonly_fields = ["config_without_secrets"]

    @admin.display(boolean=True)
    def healthy(self, sink: ExportSink) -> bool:
        return sink.healthy

    @admin.display(description="last error")
    def short_last_error(self, sink: ExportSink) -> str:
        return sink.last_error[:120]

    @admin.display(description="config")
    def config_without_secrets(self, sink: ExportSink) -> str:
        # The config holds the org's credentials for the sink; support needs to see where, not how.
        shown = {
            name: "••••" if any(word in name.lower() for word in SECRET_CONFIG_WORDS) else value
            for name, value in sorted(sink.config.items())
        }
        return format_html_join("", "<div>{}: {}</div>", shown.items()) or "—"


@admin.register(DailySpend)
class DailySpendAdmin(PastedKeySearchMixin, ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ["day", "org", "team", "key", "model", cost_usd, "calls", "prompt_tokens", "completion_tokens"]
    list_select_related = ["org", "team", "key"]
    list_filter = ["model"]
    search_fields = ["org__name", "model", "key__prefix"]
    date_hierarchy = "day"
    ordering = ["-day", "org"]
