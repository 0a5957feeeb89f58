"""Budget alerts: an org's webhooks, the events found in its request log, and their deliveries.

An event is written once (``WebhookEvent``, unique per org and ``dedupe_key``: two workers
scanning the same rows cannot both fire it), with a delivery per subscribed webhook
(``WebhookDelivery``, unique per webhook and event): the outbox the Celery tasks drain. Every
attempt at a delivery is kept (``DeliveryAttempt``) for the dashboard and the admin.
"""

import uuid
from decimal import Decimal

from django.db import models
from django.utils import timezone

from keys.models import Organization

MONEY = {"max_digits": 18, "decimal_places": 6}


class EventType(models.TextChoices):
    BUDGET_THRESHOLD = "budget.threshold"
    CREDITS_LOW = "credits.low"
    RUN_STOPPED = "run.stopped"


def _all_events() -> list[str]:
    return list(EventType.values)


def _event_id() -> str:
    return f"evt_{uuid.uuid4().hex}"


class Webhook(models.Model):
    """Where an org's alerts are POSTed. ``secret`` signs each body (HMAC-SHA256): it has to be
    kept as it is, not hashed, and is shown in full only when the webhook is created."""

    org = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="webhooks")
    url = models.URLField(max_length=2000)
    secret = models.CharField(max_length=200)
    events = models.JSONField(default=_all_events, help_text="The event types it receives.")
    enabled = models.BooleanField(default=True)
    created = models.DateTimeField(default=timezone.now)

    class Meta:
        indexes = [models.Index(fields=["org", "id"], name="webhook_org_id")]

    def __str__(self) -> str:
        return f"webhook {self.url} of {self.org}"


class OrgAlerts(models.Model):
    """An org's alert setting (``credits_low_below``) and where the scan of its request log is.

    ``last_scanned_id``: every log row of the org up to it has been looked at. ``credits_low``
    says the balance is below the setting now, so ``credits.low`` is not sent again until it has
    risen above it; ``credits_low_crossings`` numbers the crossings (each is one event)."""

    org = models.OneToOneField(Organization, on_delete=models.CASCADE, related_name="alerts")
    credits_low_below = models.DecimalField(**MONEY, default=Decimal("1.00"),
                                            help_text="credits.low is sent when the credit balance falls below this.")
    last_scanned_id = models.BigIntegerField(default=0)
    credits_low = models.BooleanField(default=False)
    credits_low_crossings = models.PositiveIntegerField(default=0)

    def __str__(self) -> str:
        return f"alerts of {self.org}"


class WebhookEvent(models.Model):
    """One alert, as its receivers get it: ``body`` is kept as the exact bytes sent and signed,
    the same for every webhook and every attempt."""

    org = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="webhook_events")
    event_id = models.CharField(max_length=40, unique=True, default=_event_id)
    type = models.CharField(max_length=40, choices=EventType.choices)
    dedupe_key = models.CharField(max_length=300, help_text="What makes it this event and no other "
                                  "(budget, period and threshold; crossing; run).")
    body = models.TextField(help_text="The JSON body POSTed, as signed: id, type, created, org, data.")
    created = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["org", "dedupe_key"], name="webhook_event_once")]
        indexes = [models.Index(fields=["org", "-created"], name="webhook_event_org_created")]

    def __str__(self) -> str:
        return f"{self.type} {self.event_id}"


class WebhookDelivery(models.Model):
    """An event on its way to one webhook: pending until a 2xx, retried with backoff meanwhile.

    ``lease_until`` is held by the worker sending it, so two workers never send it at once."""

    class State(models.TextChoices):
        PENDING = "pending"
        DELIVERED = "delivered"
        FAILED = "failed"

    webhook = models.ForeignKey(Webhook, on_delete=models.CASCADE, related_name="deliveries")
    event = models.ForeignKey(WebhookEvent, on_delete=models.CASCADE, related_name="deliveries")
    state = models.CharField(max_length=10, choices=State.choices, default=State.PENDING)
    attempts = models.PositiveIntegerField(default=0)
    next_attempt = models.DateTimeField(default=timezone.now)
    lease_until = models.DateTimeField(null=True, blank=True)
    last_error = models.TextField(blank=True, default="")
    delivered = models.DateTimeField(null=True, blank=True)
    created = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["webhook", "event"], name="webhook_delivery_once")]
        indexes = [models.Index(fields=["state", "next_attempt"], name="webhook_delivery_due")]
        verbose_name_plural = "webhook deliveries"

    def __str__(self) -> str:
        return f"{self.event} to {self.webhook.url} ({self.state})"


class DeliveryAttempt(models.Model):
    """One POST of a delivery: the receiver's status (None: no answer) or what went wrong."""

    delivery = models.ForeignKey(WebhookDelivery, on_delete=models.CASCADE, related_name="attempt_log")
    status = models.PositiveSmallIntegerField(null=True, blank=True)
    error = models.TextField(blank=True, default="")
    duration_ms = models.PositiveIntegerField(default=0)
    created = models.DateTimeField(default=timezone.now)

    class Meta:
        indexes = [models.Index(fields=["delivery", "-created"], name="delivery_attempt_created")]

    def __str__(self) -> str:
        return f"{self.status or 'no answer'} at {self.created:%Y-%m-%d %H:%M:%S}"
