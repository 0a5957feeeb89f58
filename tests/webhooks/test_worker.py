"""Done when: a webhook receiver that fails its first three deliveries gets every event exactly
once, with valid signatures, from a real Celery worker (its own process, a Redis broker,
committed log rows)."""

import uuid
from collections import Counter
from datetime import timedelta
from decimal import Decimal

import pytest
from django.utils import timezone

from billing.services import budget_set
from nemo.celery import app as celery_app
from tests.analytics.factories import make_log
from tests.analytics.test_worker import start_worker, wait_for
from tests.webhooks.receiver import Receiver
from webhooks.models import DeliveryAttempt, WebhookDelivery, WebhookEvent
from webhooks.services import webhook_create
from webhooks.tasks import deliver_all_due, deliver_webhook, scan_alerts

SECRET = "the-receivers-shared-secret"


def committed(org, key, cost: str, **fields):
    # Older than the outbox's safety lag, which the worker keeps at its default.
    return make_log(org, key, cost=Decimal(cost), inserted=timezone.now() - timedelta(minutes=1), **fields)


@pytest.mark.redis
@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("private_receivers")
def test_a_receiver_failing_its_first_three_deliveries_gets_every_event_exactly_once(org, key, system_actor,
                                                                                       monkeypatch, tmp_path):
    queue = f"nemo-test-{uuid.uuid4().hex}"
    # The settings name it so (namespace CELERY), and that name wins over "task_always_eager".
    monkeypatch.setitem(celery_app.conf, "CELERY_TASK_ALWAYS_EAGER", False)
    with Receiver(fail_next=3) as receiver:
        webhook_create(org=org, url=receiver.url, secret=SECRET, actor=system_actor)
        budget_set(org=org, key=key, amount=Decimal("5.00"), period="monthly", actor=system_actor)
        committed(org, key, "4.20")  # 84% of the budget; $0.80 of credits left
        committed(org, key, "0.90")  # 102%
        committed(org, key, "0", run_id="envelope-run", status=402, error_code="budget_exceeded", error_param="run")
        committed(org, key, "0", run_id="looping-run", status=429, error_code="run_loop_detected")
        worker = start_worker(queue, tmp_path / "worker.log", CELERY_TASK_DEFAULT_QUEUE=queue,
                              NEMO_WEBHOOK_RETRY_BASE_S="0.2")
        try:
            scan_alerts.apply_async(args=[org.pk], queue=queue)
            all_in = wait_for(lambda: len(receiver.accepted()) >= 6, timeout=90)
            # Everything sent again now (the beat's sweep, a redelivered task) must send nothing;
            # a last event, enqueued behind them, says when the worker got through them.
            deliver_all_due.apply_async(queue=queue)
            for delivery_id in WebhookDelivery.objects.values_list("pk", flat=True):
                deliver_webhook.apply_async(args=[delivery_id], queue=queue)
            committed(org, key, "0", run_id="last-run", status=429, error_code="run_loop_detected")
            scan_alerts.apply_async(args=[org.pk], queue=queue)
            last_in = wait_for(lambda: len(receiver.accepted()) >= 7, timeout=60)
        finally:
            worker.terminate()
            worker.wait(timeout=30)

    log = (tmp_path / "worker.log").read_text()[-3000:]
    assert all_in and last_in, log
    events = dict(WebhookEvent.objects.values_list("event_id", "type"))
    assert sorted(events.values()) == ["budget.threshold"] * 3 + ["credits.low"] + ["run.stopped"] * 3
    assert Counter(each.event["id"] for each in receiver.accepted()) == {event_id: 1 for event_id in events}
    assert receiver.badly_signed(SECRET) == []
    assert [each.status for each in receiver.received[:3]] == [503, 503, 503]
    assert len(receiver.received) == 7 + 3
    assert set(WebhookDelivery.objects.values_list("state", flat=True)) == {"delivered"}
    assert DeliveryAttempt.objects.filter(status=503).count() == 3
