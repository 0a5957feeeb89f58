"""Celery tasks of budget alerts: the scan of each org's request log for events, and the
delivery of each event to each webhook. Each takes ids, loads, calls a service; each is safe to
run twice (the scan holds its org's row, a delivery its lease), hence acks_late."""

from celery import shared_task

from keys.models import Organization
from webhooks.alerts import alerts_scan
from webhooks.models import Webhook, WebhookDelivery
from webhooks.selectors import deliveries_due
from webhooks.services import delivery_attempt, retry_delay


@shared_task(acks_late=True)
def scan_all_alerts() -> int:
    """Beat, every 15 s: one scan per org that has an enabled webhook."""
    org_ids = list(Webhook.objects.filter(enabled=True).values_list("org_id", flat=True).distinct())
    for org_id in org_ids:
        scan_alerts.delay(org_id)
    return len(org_ids)


@shared_task(acks_late=True)
def scan_alerts(org_id: int) -> int:
    org = Organization.objects.filter(pk=org_id).first()
    if org is None:
        return 0
    deliveries = alerts_scan(org=org)
    for delivery_id in deliveries:
        deliver_webhook.delay(delivery_id)
    return len(deliveries)


@shared_task(acks_late=True)
def deliver_all_due() -> int:
    """Beat, every 30 s: sends again what is due (a retry whose task was lost is not lost)."""
    due = list(deliveries_due().filter(webhook__enabled=True).values_list("pk", flat=True)[:1000])
    for delivery_id in due:
        deliver_webhook.delay(delivery_id)
    return len(due)


@shared_task(bind=True, acks_late=True, max_retries=None)
def deliver_webhook(self, delivery_id: int) -> str:
    """Sends one delivery; a failure is tried again after its backoff."""
    delivery = delivery_attempt(delivery_id=delivery_id)
    if delivery is None:
        return "not due"
    if delivery.state == WebhookDelivery.State.PENDING:
        raise self.retry(countdown=retry_delay(delivery.attempts).total_seconds())
    return delivery.state
