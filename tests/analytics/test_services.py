"""Sinks are configured through audited services; retention never changes the totals people see."""

from datetime import UTC, datetime
from decimal import Decimal

import pytest
from django.http import Http404

from analytics.models import DailySpend, ExportSink, RequestLog, StoredResponse
from analytics.partitions import month_partitions, partitions_ensure
from analytics.selectors import run_get, spend_rows, spend_total
from analytics.services import request_logs_prune, retention_cutoff, sink_create, sink_delete, sink_update
from analytics.tasks import prune_request_logs
from dashboard.selectors import credit_balance, key_spend
from keys.models import AuditEvent
from tests.analytics.factories import make_key, make_log

pytestmark = pytest.mark.django_db

NOW = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)
LANGFUSE = {"url": "https://langfuse.example.com/", "public_key": "pk-lf-1", "secret_key": "sk-lf-secret-9876"}


def test_creating_a_sink_is_audited_without_its_secret(org, system_actor):
    sink = sink_create(org=org, type="langfuse", config=LANGFUSE, actor=system_actor)

    event = AuditEvent.objects.get(org=org, action="sink.create")
    assert sink.config == {**LANGFUSE, "url": "https://langfuse.example.com"}
    assert event.data == {"type": "langfuse", "config": {
        "url": "https://langfuse.example.com", "public_key": "pk-lf-1", "secret_key": "…9876"}}
    assert (event.target_id, event.actor_label) == (str(sink.pk), "test")


@pytest.mark.parametrize("sink_type, config, complaint", [
    ("langfuse", {"public_key": "pk"}, "needs secret_key"),
    ("datadog", {}, "needs api_key"),
    ("s3", {"bucket": "b"}, "needs region"),
    ("s3", {"bucket": "b", "region": "eu-west-1", "api_key": "x"}, "does not take api_key"),
    ("datadog", {"api_key": "k", "url": "ftp://intake"}, "url must be an http"),
    ("kafka", {}, "unknown sink type"),
])
def test_a_sink_with_a_bad_config_is_refused(org, system_actor, sink_type, config, complaint):
    with pytest.raises(ValueError, match=complaint):
        sink_create(org=org, type=sink_type, config=config, actor=system_actor)
    assert ExportSink.objects.count() == 0


def test_updating_a_sink_keeps_a_secret_left_blank_and_retries_at_once(org, system_actor):
    sink = sink_create(org=org, type="langfuse", config=LANGFUSE, actor=system_actor)
    ExportSink.objects.filter(pk=sink.pk).update(consecutive_failures=4, last_error="401", next_attempt=NOW)
    sink.refresh_from_db()

    sink_update(sink=sink, actor=system_actor, config={"public_key": "pk-lf-2", "secret_key": ""})

    sink.refresh_from_db()
    assert sink.config == {"public_key": "pk-lf-2", "secret_key": "sk-lf-secret-9876"}
    assert (sink.consecutive_failures, sink.last_error, sink.next_attempt) == (0, "", None)
    assert AuditEvent.objects.filter(org=org, action="sink.update").count() == 1


def test_deleting_a_sink_is_audited(org, system_actor):
    sink = sink_create(org=org, type="datadog", config={"api_key": "k"}, actor=system_actor)
    sink_id = sink.pk

    sink_delete(sink=sink, actor=system_actor)

    assert ExportSink.objects.count() == 0
    assert AuditEvent.objects.filter(org=org, action="sink.delete", target_id=str(sink_id)).count() == 1


def test_the_retention_cutoff_is_the_start_of_the_month_n_months_back(settings):
    settings.NEMO_LOG_RETENTION_MONTHS = 13

    assert retention_cutoff(NOW) == datetime(2025, 10, 1, tzinfo=UTC)


@pytest.fixture(params=["in the default partition", "in month partitions"])
def old_months(request) -> bool:
    """Where the old rows go on PostgreSQL: the DEFAULT partition (no partition of their month,
    pruned day by day) or partitions of their own (dropped whole once they may go)."""
    if request.param == "in month partitions":
        partitions_ensure(now=datetime(2025, 9, 1, tzinfo=UTC), months_ahead=2)
    return request.param == "in month partitions"


def make_history(org, key):
    """Two days older than the retention period, one recent day."""
    other = make_key(org, "reviewer")
    old = [
        make_log(org, key, created=datetime(2025, 9, 14, 8, tzinfo=UTC), cost=Decimal("0.400000"), run_id="old-run"),
        make_log(org, other, created=datetime(2025, 9, 14, 23, 59, tzinfo=UTC), cost=Decimal("0.100000"),
                 model="gpt-4o"),
        make_log(org, key, created=datetime(2025, 9, 30, 12, tzinfo=UTC), cost=Decimal("0.020000")),
    ]
    recent = make_log(org, key, created=datetime(2026, 11, 20, tzinfo=UTC), cost=Decimal("0.003000"))
    return old, recent


def totals_seen(org) -> dict:
    return {
        "credits": credit_balance(org=org),
        "spend": spend_total(org_id=org.pk),
        "spend_since_september": spend_total(org_id=org.pk, since=datetime(2025, 9, 15, tzinfo=UTC)),
        "keys": key_spend(org=org, now=NOW),
        **{f"by_{group}": spend_rows(org=org, group_by=group) for group in ("day", "key", "team", "model")},
    }


def test_pruning_old_days_keeps_every_total_people_see(org, key, settings, old_months):
    settings.NEMO_LOG_RETENTION_MONTHS = 13
    old, recent = make_history(org, key)
    before = totals_seen(org)

    deleted = request_logs_prune(now=NOW)

    assert deleted == 3
    assert list(RequestLog.objects.values_list("pk", flat=True)) == [recent.pk]
    assert totals_seen(org) == before
    assert before["credits"] == Decimal("5.00") - Decimal("0.523")


def test_pruning_twice_changes_nothing_more(org, key, settings, old_months):
    settings.NEMO_LOG_RETENTION_MONTHS = 13
    make_history(org, key)
    request_logs_prune(now=NOW)
    ledger = list(DailySpend.objects.order_by("pk").values())

    deleted_again = request_logs_prune(now=NOW)

    assert deleted_again == 0
    assert list(DailySpend.objects.order_by("pk").values()) == ledger


def test_a_pruned_run_is_gone_from_the_log(org, key, settings, old_months):
    settings.NEMO_LOG_RETENTION_MONTHS = 13
    make_history(org, key)

    prune_request_logs.delay()

    with pytest.raises(Http404):
        run_get(org=org, run_id="old-run")


def test_pruning_waits_for_every_enabled_sink_to_export_the_day(org, key, other_org, other_key, settings, old_months,
                                                                system_actor):
    settings.NEMO_LOG_RETENTION_MONTHS = 13
    old, _ = make_history(org, key)
    unexported = make_log(other_org, other_key, created=datetime(2025, 9, 14, tzinfo=UTC))
    sink_create(org=org, type="datadog", config={"api_key": "k"}, actor=system_actor)
    disabled = sink_create(org=org, type="datadog", config={"api_key": "k"}, actor=system_actor)
    ExportSink.objects.filter(pk=disabled.pk).update(enabled=False)
    ExportSink.objects.filter(org=org, enabled=True).update(last_exported_id=old[1].pk)
    sink_create(org=other_org, type="datadog", config={"api_key": "k"}, actor=system_actor)

    deleted = request_logs_prune(now=NOW)

    assert deleted == 2
    assert set(RequestLog.objects.filter(created__lt=retention_cutoff(NOW)).values_list("pk", flat=True)) == {
        old[2].pk, unexported.pk}


def test_stored_responses_are_pruned_with_the_log(org, settings):
    settings.NEMO_LOG_RETENTION_MONTHS = 13
    old = StoredResponse.objects.create(org=org, response_id="resp_old", response={}, created=datetime(
        2025, 9, 30, tzinfo=UTC))
    recent = StoredResponse.objects.create(org=org, response_id="resp_new", response={}, created=NOW)

    request_logs_prune(now=NOW)

    assert retention_cutoff(NOW) > old.created
    assert list(StoredResponse.objects.values_list("pk", flat=True)) == [recent.pk]


@pytest.mark.postgres
def test_pruning_drops_a_month_past_retention_whole_and_keeps_the_next(org, key, settings):
    settings.NEMO_LOG_RETENTION_MONTHS = 13
    partitions_ensure(now=datetime(2025, 9, 1, tzinfo=UTC), months_ahead=2)
    old, recent = make_history(org, key)
    kept = make_log(org, key, created=datetime(2025, 10, 1, tzinfo=UTC))
    before = totals_seen(org)

    deleted = request_logs_prune(now=NOW)

    months = [partition.name for partition in month_partitions()]
    assert deleted == 3
    assert "analytics_requestlog_p2025_09" not in months
    assert "analytics_requestlog_p2025_10" in months
    assert set(RequestLog.objects.values_list("pk", flat=True)) == {kept.pk, recent.pk}
    assert totals_seen(org) == before


@pytest.mark.postgres
def test_a_month_a_sink_has_not_exported_whole_keeps_its_partition_and_loses_its_exported_days(
        org, key, settings, system_actor):
    settings.NEMO_LOG_RETENTION_MONTHS = 13
    partitions_ensure(now=datetime(2025, 9, 1, tzinfo=UTC), months_ahead=0)
    old, _ = make_history(org, key)
    sink = sink_create(org=org, type="datadog", config={"api_key": "k"}, actor=system_actor)
    ExportSink.objects.filter(pk=sink.pk).update(last_exported_id=old[1].pk)

    deleted = request_logs_prune(now=NOW)

    assert "analytics_requestlog_p2025_09" in [partition.name for partition in month_partitions()]
    assert deleted == 2
    assert list(RequestLog.objects.filter(created__lt=retention_cutoff(NOW)).values_list("pk", flat=True)) == [
        old[2].pk]
