"""Celery tasks of the request log: exports and retention. Each takes ids, loads, calls a service;
each is safe to run twice, so a redelivered task does no harm (hence acks_late)."""

from celery import shared_task

from analytics.models import ExportSink
from analytics.selectors import sinks_due
from analytics.services import request_logs_prune, sink_export


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
