"""Writes of budget alerts: webhooks and the org's alert setting (each with its audit event),
and the delivery of an event to a webhook.

Delivery
--------
Each ``WebhookDelivery`` is a row of the outbox. A worker claims it with a conditional UPDATE (a
lease, only while it is pending and due), POSTs the event's body signed with the webhook's
secret, records the attempt, and then marks it delivered (a 2xx) or due again after a backoff.
So a delivery that saw a 2xx is never sent again, two workers never send one at once, and a
receiver that is down gets the event once it is back (for up to ``GIVE_UP_AFTER``). A worker
that dies between the 2xx and its UPDATE leaves the lease to run out and the event is sent
again: receivers dedupe on the event's ``id``.
"""

import json
import time
from datetime import timedelta
from decimal import Decimal

import httpx
from django.conf import settings
from django.db import transaction
from django.db.models import Max, Q
from django.utils import timezone

from analytics.exporters.base import ExportError, describe_failure, post_body
from analytics.exporters.destinations import url_refusal
from analytics.models import RequestLog
from analytics.services import backoff
from keys.audit import Actor, audit_record
from keys.models import Organization
from webhooks.models import DeliveryAttempt, EventType, OrgAlerts, Webhook, WebhookDelivery
from webhooks.signing import SIGNATURE_HEADER, new_secret, signature

# Longer than a POST can take (the exporters' client: 30 s, 10 s to connect).
DELIVERY_LEASE = timedelta(minutes=2)
RETRY_CAP = timedelta(minutes=30)
GIVE_UP_AFTER = timedelta(days=3)
MIN_SECRET_LENGTH = 16


class WebhookInvalid(ValueError):
    """A webhook's field refused, with the field's name (the API's ``param``)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


# --- webhooks -----------------------------------------------------------------------------------

def _clean_url(url: str) -> str:
    url = (url or "").strip()
    refusal = url_refusal(url)
    if refusal:
        raise WebhookInvalid("url", refusal.replace("a sink", "a webhook"))
    return url


def _clean_events(events: list[str] | None) -> list[str]:
    if events is None:
        return list(EventType.values)
    unknown = sorted(set(events) - set(EventType.values))
    if unknown:
        raise WebhookInvalid("events", f"unknown event {', '.join(unknown)}; events are "
                                       f"{', '.join(EventType.values)}")
    if not events:
        raise WebhookInvalid("events", "a webhook receives at least one event")
    return [event for event in EventType.values if event in events]


def _clean_secret(secret: str | None) -> str:
    if secret is None or secret == "":
        return new_secret()
    if len(secret) < MIN_SECRET_LENGTH or len(secret) > 200:
        raise WebhookInvalid("secret", f"a secret has {MIN_SECRET_LENGTH} to 200 characters")
    return secret


def _log_end(org: Organization) -> int:
    return RequestLog.objects.filter(org=org).aggregate(last=Max("id"))["last"] or 0


def alerts_start(*, org: Organization) -> OrgAlerts:
    """The org's alert state, made with its first webhook (or setting): its scan starts at the
    log's end, so a new webhook hears of what happens from now on, not of last month's runs."""
    alerts, _ = OrgAlerts.objects.get_or_create(org=org, defaults={"last_scanned_id": _log_end(org)})
    return alerts


@transaction.atomic
def webhook_create(*, org: Organization, url: str, actor: Actor, events: list[str] | None = None,
                   secret: str | None = None) -> Webhook:
    """A new webhook; without a secret one is made (the caller shows it once)."""
    unwatched = not Webhook.objects.filter(org=org, enabled=True).exists()
    webhook = Webhook.objects.create(org=org, url=_clean_url(url), events=_clean_events(events),
                                     secret=_clean_secret(secret))
    alerts = alerts_start(org=org)
    if unwatched:
        # Nobody scanned the org's log while it had no webhook: its first one starts at the end.
        OrgAlerts.objects.filter(pk=alerts.pk).update(last_scanned_id=_log_end(org))
    audit_record(org=org, actor=actor, action="webhook.create", target=webhook,
                 data={"url": webhook.url, "events": webhook.events})
    return webhook


@transaction.atomic
def webhook_update(*, webhook: Webhook, actor: Actor, url: str | None = None, events: list[str] | None = None,
                   enabled: bool | None = None, secret: str | None = None) -> Webhook:
    changes: dict = {}
    if url is not None:
        changes["url"] = _clean_url(url)
    if events is not None:
        changes["events"] = _clean_events(events)
    if enabled is not None:
        changes["enabled"] = enabled
    if secret is not None:
        changes["secret"] = _clean_secret(secret)
    for field, value in changes.items():
        setattr(webhook, field, value)
    if changes:
        webhook.save(update_fields=list(changes))
    # The audit trail says the secret changed, never what it is.
    audited = {**changes, "secret": "changed"} if "secret" in changes else changes
    audit_record(org=webhook.org, actor=actor, action="webhook.update", target=webhook, data=audited)
    return webhook


@transaction.atomic
def webhook_delete(*, webhook: Webhook, actor: Actor) -> None:
    """Removes the webhook with its pending deliveries."""
    audit_record(org=webhook.org, actor=actor, action="webhook.delete", target=webhook, data={"url": webhook.url})
    webhook.delete()


@transaction.atomic
def alerts_settings_update(*, org: Organization, actor: Actor, credits_low_below: Decimal) -> OrgAlerts:
    amount = Decimal(credits_low_below)
    if not amount.is_finite() or amount < 0:
        raise ValueError("the credits.low threshold must be a finite amount, not negative")
    alerts = alerts_start(org=org)
    alerts.credits_low_below = amount
    alerts.save(update_fields=["credits_low_below"])
    audit_record(org=org, actor=actor, action="alerts.settings", target=alerts,
                 data={"credits_low_below": str(amount)})
    return alerts


# --- delivery -----------------------------------------------------------------------------------

def _claim(delivery_id: int, now) -> WebhookDelivery | None:
    claimed = (
        WebhookDelivery.objects.filter(pk=delivery_id, state=WebhookDelivery.State.PENDING, next_attempt__lte=now,
                                       webhook__enabled=True)
        .filter(Q(lease_until__isnull=True) | Q(lease_until__lt=now))
        .update(lease_until=now + DELIVERY_LEASE)
    )
    if not claimed:
        return None
    return WebhookDelivery.objects.select_related("webhook", "event", "event__org").get(pk=delivery_id)


def _post(delivery: WebhookDelivery) -> tuple[int | None, str]:
    """The receiver's status (None without an answer) and what went wrong (empty on a 2xx)."""
    event, body = delivery.event, delivery.event.body.encode()
    headers = {SIGNATURE_HEADER: signature(delivery.webhook.secret, body), "X-Nemo-Event": event.type,
               "X-Nemo-Event-Id": event.event_id, "User-Agent": "Nemo-Webhooks/1"}
    try:
        response = post_body(delivery.webhook.url, body, headers=headers)
    except (ExportError, httpx.InvalidURL) as exc:
        return None, str(exc)
    if response.is_success:
        return response.status_code, ""
    return response.status_code, describe_failure("the receiver", response)


def retry_delay(attempts: int) -> timedelta:
    return backoff(attempts, base=timedelta(seconds=settings.NEMO_WEBHOOK_RETRY_BASE_S), cap=RETRY_CAP)


def delivery_attempt(*, delivery_id: int) -> WebhookDelivery | None:
    """Sends the delivery if it is pending and due and no other worker holds it; returns it as it
    is afterwards (None when it was not sent)."""
    delivery = _claim(delivery_id, timezone.now())
    if delivery is None:
        return None
    started = time.monotonic()
    status, error = _post(delivery)
    now = timezone.now()
    DeliveryAttempt.objects.create(delivery=delivery, status=status, error=error, created=now,
                                   duration_ms=int((time.monotonic() - started) * 1000))
    held = WebhookDelivery.objects.filter(pk=delivery.pk, state=WebhookDelivery.State.PENDING)
    delivery.attempts += 1
    if not error:
        delivery.state, delivery.delivered, delivery.last_error = WebhookDelivery.State.DELIVERED, now, ""
    elif now - delivery.event.created >= GIVE_UP_AFTER:
        delivery.state, delivery.last_error = WebhookDelivery.State.FAILED, error
    else:
        delivery.next_attempt, delivery.last_error = now + retry_delay(delivery.attempts), error
    delivery.lease_until = None
    held.update(state=delivery.state, delivered=delivery.delivered, last_error=delivery.last_error[:2000],
                attempts=delivery.attempts, next_attempt=delivery.next_attempt, lease_until=None)
    return delivery


def event_body(*, event_id: str, type: str, created, org: Organization, data: dict) -> str:
    """The JSON body of an event: what every receiver gets and what its signature covers."""
    return json.dumps({"id": event_id, "type": type, "created": created.isoformat(),
                       "org": {"id": org.pk, "slug": org.slug, "name": org.name}, "data": data},
                      separators=(",", ":"), ensure_ascii=False)
