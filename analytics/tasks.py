"""Celery tasks of the request log: exports, the daily ledger, retention and the reaper of
calls whose worker died. Each takes ids, loads, calls a service; each is safe to run twice, so a
redelivered task does no harm (hence acks_late)."""

from datetime import date, timedelta

from celery import shared_task
from django.utils import timezone

from analytics.models import ExportSink
from analytics.partitions import partitions_ensure
from analytics.reaper import reservations_reap
from analytics.selectors import sinks_due
from analytics.services import daily_spend_settle, request_logs_prune, sink_export, spend_rollup


@shared_task(acks_late=True)
def export_all_sinks() -> int:
    """Beat, every 30 s: one export task per enabled sink that is not backing off."""
    due = list(sinks_due().values_list("pk", flat=True))
    for sink_id in due:
        export_sink.delay(sink_id)
    return len(due)


@shared_task(acks_late=True)
def export_sink(sink_id: int) -> int:
    sink = ExportSink.objects.select_related("org").filter(pk=sink_id).first()
    if sink is None:
        return 0
    return sink_export(sink)


@shared_task(acks_late=True)
def prune_request_logs() -> int:
    return request_logs_prune()


@shared_task(acks_late=True)
def make_log_partitions() -> list[str]:
    """Beat, daily: the request log's partitions of this month and the next three, and of any
    month whose rows landed in its DEFAULT partition (see analytics.partitions). Idempotent."""
    return partitions_ensure()


@shared_task(acks_late=True)
def roll_up_spend() -> int:
    """Beat, every minute: rolls the log rows written since into the daily ledger (see
    analytics.services.spend_rollup). Safe to run twice or concurrently: rollups take turns."""
    return spend_rollup()


@shared_task(acks_late=True)
def settle_daily_spend(day: str | None = None) -> int:
    """Settles a UTC day (``YYYY-MM-DD``; by default yesterday and today) of the request log into
    the daily ledger again, whole (a repair: roll_up_spend keeps it current). Idempotent: each
    run replaces the day's rows."""
    today = timezone.now().date()
    days = [date.fromisoformat(day)] if day else [today - timedelta(days=1), today]
    return sum(daily_spend_settle(day=each) for each in days)


@shared_task(acks_late=True)
def reap_reservations(now: float | None = None) -> list[str]:
    """Beat, every minute: releases the reservations of calls that died with their worker (see
    analytics.reaper). Safe to run twice or concurrently: each reservation is released once."""
    return reservations_reap(now=now)
