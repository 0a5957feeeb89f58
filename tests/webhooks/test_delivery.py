"""Delivering an event: a signed POST of its exact body, every attempt recorded, retried with
backoff until a 2xx, and never sent again after one."""

import hashlib
import hmac
import json
from datetime import timedelta
from decimal import Decimal

import pytest
from django.utils import timezone

from tests.analytics.factories import make_log
from tests.webhooks.receiver import Receiver
from webhooks.alerts import alerts_scan
from webhooks.models import DeliveryAttempt, WebhookDelivery
from webhooks.services import delivery_attempt, retry_delay, webhook_create
from webhooks.signing import signature_valid

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("no_lag", "private_receivers")]

SECRET = "the-receivers-shared-secret"


@pytest.fixture
def receiver():
    with Receiver() as fake:
        yield fake


@pytest.fixture
def delivery(org, key, receiver, system_actor) -> WebhookDelivery:
    webhook_create(org=org, url=receiver.url, secret=SECRET, actor=system_actor)
    make_log(org, key, run_id="looping-run", status=429, error_code="run_loop_detected", cost=Decimal("0"))
    (delivery_id,) = alerts_scan(org=org)
    return WebhookDelivery.objects.select_related("event").get(pk=delivery_id)


def make_due(delivery: WebhookDelivery) -> None:
    WebhookDelivery.objects.filter(pk=delivery.pk).update(next_attempt=timezone.now())


def test_the_body_is_the_event_and_its_signature_is_the_hmac_of_the_exact_body(org, delivery, receiver):
    delivery_attempt(delivery_id=delivery.pk)

    (got,) = receiver.received
    expected = "sha256=" + hmac.new(SECRET.encode(), got.body, hashlib.sha256).hexdigest()
    assert got.headers["X-Nemo-Signature"] == expected
    assert signature_valid(SECRET, got.body, got.headers["X-Nemo-Signature"])
    assert not signature_valid("another-secret-entirely", got.body, got.headers["X-Nemo-Signature"])
    assert got.headers["Content-Type"] == "application/json"
    event = json.loads(got.body)
    assert set(event) == {"id", "type", "created", "org", "data"}
    assert (event["id"], event["type"]) == (delivery.event.event_id, "run.stopped")
    assert got.headers["X-Nemo-Event-Id"] == event["id"]
    assert event["org"] == {"id": org.pk, "slug": org.slug, "name": org.name}
    assert event["data"]["run_id"] == "looping-run"


def test_a_delivered_event_is_never_sent_again(delivery, receiver):
    assert delivery_attempt(delivery_id=delivery.pk).state == WebhookDelivery.State.DELIVERED
    make_due(delivery)

    assert delivery_attempt(delivery_id=delivery.pk) is None
    assert len(receiver.received) == 1


def test_a_failed_attempt_is_recorded_and_tried_again_after_a_growing_backoff(delivery, receiver):
    receiver.fail_next = 2
    before = timezone.now()

    first = delivery_attempt(delivery_id=delivery.pk)
    assert delivery_attempt(delivery_id=delivery.pk) is None  # not due yet
    make_due(delivery)
    second = delivery_attempt(delivery_id=delivery.pk)
    make_due(delivery)
    third = delivery_attempt(delivery_id=delivery.pk)

    assert (first.state, first.attempts) == ("pending", 1)
    assert first.last_error == "the receiver answered 503 Service Unavailable"
    assert first.next_attempt >= before + retry_delay(1)
    assert retry_delay(2) == 2 * retry_delay(1)
    assert second.state == "pending"
    assert (third.state, third.attempts, third.last_error) == ("delivered", 3, "")
    attempts = list(DeliveryAttempt.objects.filter(delivery=delivery).order_by("id").values_list("status", flat=True))
    assert attempts == [503, 503, 200]
    assert [each.event["id"] for each in receiver.received] == [delivery.event.event_id] * 3


def test_a_receiver_that_is_down_is_an_attempt_without_status(delivery, receiver):
    receiver.__exit__()

    after = delivery_attempt(delivery_id=delivery.pk)

    assert after.state == "pending"
    attempt = DeliveryAttempt.objects.get(delivery=delivery)
    assert attempt.status is None
    assert "ConnectError" in attempt.error


def test_a_delivery_held_by_another_worker_is_not_sent(delivery, receiver):
    WebhookDelivery.objects.filter(pk=delivery.pk).update(lease_until=timezone.now() + timedelta(minutes=1))

    assert delivery_attempt(delivery_id=delivery.pk) is None
    assert receiver.received == []


def test_an_event_still_refused_after_three_days_is_given_up(delivery, receiver):
    receiver.fail_next = 1
    delivery.event.created = timezone.now() - timedelta(days=3, minutes=1)
    delivery.event.save()

    assert delivery_attempt(delivery_id=delivery.pk).state == WebhookDelivery.State.FAILED
