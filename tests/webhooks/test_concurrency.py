"""Two workers scanning one org at once fire each event once: one holds the org's row, the other
skips it, and the event's uniqueness backs that up."""

import threading
from decimal import Decimal

import pytest
from django.db import connection

from billing.services import budget_set
from tests.analytics.factories import make_log
from webhooks.alerts import alerts_scan
from webhooks.models import WebhookDelivery, WebhookEvent
from webhooks.services import webhook_create


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("no_lag")
def test_concurrent_scans_of_one_org_fire_each_event_once(org, key, system_actor):
    webhook_create(org=org, url="https://hooks.example.com/nemo", actor=system_actor)
    budget_set(org=org, key=key, amount=Decimal("1.00"), actor=system_actor)
    for run in range(20):
        make_log(org, key, cost=Decimal("0.06"), run_id=f"run-{run}", status=429, error_code="run_loop_detected")
    start = threading.Barrier(4)
    failures = []

    def scan():
        try:
            start.wait()
            alerts_scan(org=org)
        except Exception as exc:  # noqa: BLE001 - reported by the assertion below
            failures.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=scan) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    alerts_scan(org=org)

    assert failures == []
    assert WebhookEvent.objects.filter(type="run.stopped").count() == 20
    assert sorted(WebhookEvent.objects.filter(type="budget.threshold").values_list("dedupe_key", flat=True)) == [
        f"budget.threshold:{key.budgets.get().pk}:all:{threshold}" for threshold in (100, 50, 80)]
    assert WebhookDelivery.objects.count() == WebhookEvent.objects.count()
