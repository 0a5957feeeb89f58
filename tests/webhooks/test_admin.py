"""The support admin shows webhooks (never their secret), and each delivery with its attempts."""

import pytest

from tests.analytics.factories import make_log
from webhooks.alerts import alerts_scan
from webhooks.models import DeliveryAttempt, WebhookDelivery
from webhooks.services import webhook_create

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("no_lag")]

SECRET = "a-secret-support-never-sees"


@pytest.fixture
def staff_client(client, django_user_model):
    client.force_login(django_user_model.objects.create_superuser(username="staff", password="pw-staff-123"))
    return client


@pytest.fixture
def delivery(org, key, system_actor) -> WebhookDelivery:
    webhook_create(org=org, url="https://hooks.example.com/nemo", secret=SECRET, actor=system_actor)
    make_log(org, key, run_id="looping-run", status=429, error_code="run_loop_detected")
    (delivery_id,) = alerts_scan(org=org)
    delivery = WebhookDelivery.objects.get(pk=delivery_id)
    DeliveryAttempt.objects.create(delivery=delivery, status=503, error="the receiver answered 503 Service Unavailable")
    return delivery


def test_staff_see_webhooks_without_their_secret(staff_client, delivery):
    page = staff_client.get("/admin/webhooks/webhook/").content.decode()
    detail = staff_client.get(f"/admin/webhooks/webhook/{delivery.webhook_id}/change/").content.decode()

    assert "hooks.example.com/nemo" in page
    assert SECRET not in page + detail


def test_staff_see_a_delivery_with_its_attempts(staff_client, delivery):
    listing = staff_client.get("/admin/webhooks/webhookdelivery/").content.decode()
    page = staff_client.get(f"/admin/webhooks/webhookdelivery/{delivery.pk}/change/").content.decode()

    assert delivery.event.event_id in listing
    assert "the receiver answered 503 Service Unavailable" in page
    assert "503" in page
