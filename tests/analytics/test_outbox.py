"""The export outbox: nothing exported twice, nothing skipped, failures retried with backoff."""

import threading
from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone

from analytics import services
from analytics.models import ExportSink, RequestLog
from analytics.services import sink_create, sink_export_batch
from analytics.tasks import export_all_sinks, export_sink
from tests.analytics.factories import make_log
from tests.analytics.fakes import FakeDatadog

pytestmark = pytest.mark.usefixtures("private_sinks")

LONG_AGO = timedelta(minutes=1)


@pytest.fixture
def datadog():
    with FakeDatadog() as fake:
        yield fake


@pytest.fixture
def small_batches(monkeypatch):
    monkeypatch.setattr(services, "BATCH_SIZE", 5)


def datadog_sink(org, fake, system_actor) -> ExportSink:
    return sink_create(org=org, type="datadog", actor=system_actor, config={"url": fake.url, "api_key": fake.api_key})


@pytest.mark.django_db
@pytest.mark.usefixtures("no_lag", "small_batches")
def test_a_sink_that_fails_three_times_then_recovers_gets_every_row_exactly_once(org, key, datadog, system_actor):
    rows = [make_log(org, key) for _ in range(10)]
    sink = datadog_sink(org, datadog, system_actor)
    sent = [sink_export_batch(sink)]
    datadog.fail_next = 3
    sent += [sink_export_batch(sink), sink_export_batch(sink)]
    rows += [make_log(org, key) for _ in range(5)]

    sent += [sink_export_batch(sink) for _ in range(5)]

    sink.refresh_from_db()
    assert sent == [5, 0, 0, 0, 5, 5, 0, 0]
    assert datadog.entries_by_request() == {row.request_id: 1 for row in rows}
    assert (sink.last_exported_id, sink.consecutive_failures, sink.last_error) == (rows[-1].pk, 0, "")
    assert datadog.problems == []


@pytest.mark.django_db
@pytest.mark.usefixtures("no_lag")
def test_each_failure_doubles_the_wait_before_the_next_attempt(org, key, datadog, system_actor):
    make_log(org, key)
    sink = datadog_sink(org, datadog, system_actor)
    datadog.fail_next = 2

    first_started = timezone.now()
    sink_export_batch(sink)
    first_ended = timezone.now()
    first_next = ExportSink.objects.get(pk=sink.pk).next_attempt
    second_started = timezone.now()
    sink_export_batch(sink)
    second_ended = timezone.now()
    sink.refresh_from_db()

    assert first_started + timedelta(seconds=30) <= first_next <= first_ended + timedelta(seconds=30)
    assert second_started + timedelta(seconds=60) <= sink.next_attempt <= second_ended + timedelta(seconds=60)
    assert sink.consecutive_failures == 2
    assert "Datadog answered 503" in sink.last_error


@pytest.mark.django_db
@pytest.mark.usefixtures("no_lag")
def test_the_wait_between_attempts_is_capped(org, key, datadog, system_actor):
    make_log(org, key)
    sink = datadog_sink(org, datadog, system_actor)
    ExportSink.objects.filter(pk=sink.pk).update(consecutive_failures=40)
    datadog.fail_next = 1
    started = timezone.now()

    sink_export_batch(sink)

    ended = timezone.now()
    sink.refresh_from_db()
    assert started + timedelta(minutes=30) <= sink.next_attempt <= ended + timedelta(minutes=30)
    assert sink.consecutive_failures == 41


@pytest.mark.django_db
@pytest.mark.usefixtures("no_lag")
def test_a_sink_backing_off_is_left_alone_until_its_next_attempt(org, key, datadog, system_actor):
    make_log(org, key)
    backing_off = datadog_sink(org, datadog, system_actor)
    ExportSink.objects.filter(pk=backing_off.pk).update(next_attempt=timezone.now() + timedelta(minutes=1))
    due = datadog_sink(org, datadog, system_actor)

    enqueued = export_all_sinks()

    assert enqueued == 1
    assert export_sink(backing_off.pk) == 0
    assert len(datadog.entries) == 1
    assert ExportSink.objects.get(pk=due.pk).last_exported_id == RequestLog.objects.get().pk


@pytest.mark.django_db
@pytest.mark.usefixtures("no_lag")
def test_a_disabled_sink_exports_nothing(org, key, datadog, system_actor):
    make_log(org, key)
    sink = datadog_sink(org, datadog, system_actor)
    ExportSink.objects.filter(pk=sink.pk).update(enabled=False)

    assert export_sink(sink.pk) == 0
    assert datadog.requests == 0


@pytest.mark.django_db
def test_rows_younger_than_the_safety_lag_wait_for_the_next_run(org, key, datadog, system_actor):
    make_log(org, key)
    sink = datadog_sink(org, datadog, system_actor)

    sent_while_young = sink_export_batch(sink)
    RequestLog.objects.update(inserted=timezone.now() - LONG_AGO)
    sent_when_old = sink_export_batch(sink)

    assert (sent_while_young, sent_when_old) == (0, 1)


@pytest.mark.django_db
def test_a_batch_stops_at_the_first_young_row_even_if_later_rows_are_old(org, key, datadog, system_actor):
    # A smaller id committed late: exporting the larger id first would move the cursor past it.
    young = make_log(org, key)
    old = make_log(org, key, inserted=timezone.now() - LONG_AGO)
    sink = datadog_sink(org, datadog, system_actor)

    sent_before = sink_export_batch(sink)
    RequestLog.objects.filter(pk=young.pk).update(inserted=timezone.now() - LONG_AGO)
    sent_after = sink_export_batch(sink)

    assert (sent_before, sent_after) == (0, 2)
    assert datadog.entries_by_request() == {young.request_id: 1, old.request_id: 1}


def export_repeatedly(sink_id: int) -> None:
    try:
        for _ in range(12):
            export_sink(sink_id)
    finally:
        connection.close()


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("no_lag", "small_batches")
def test_concurrent_exports_of_one_sink_send_each_row_once(org, key, datadog, system_actor):
    rows = [make_log(org, key) for _ in range(30)]
    sink = datadog_sink(org, datadog, system_actor)
    datadog.delay = 0.05
    workers = [threading.Thread(target=export_repeatedly, args=(sink.pk,)) for _ in range(4)]

    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=30)

    assert datadog.entries_by_request() == {row.request_id: 1 for row in rows}
    assert ExportSink.objects.get(pk=sink.pk).last_exported_id == rows[-1].pk
