"""Reads of webhooks and their deliveries, scoped by org."""

from django.db.models import Prefetch, QuerySet
from django.http import Http404
from django.utils import timezone

from keys.models import Organization
from webhooks.models import DeliveryAttempt, OrgAlerts, Webhook, WebhookDelivery


def webhook_list(*, org: Organization) -> QuerySet[Webhook]:
    return Webhook.objects.filter(org=org).order_by("id")


def webhook_get(*, org: Organization, pk) -> Webhook:
    try:
        return Webhook.objects.select_related("org").get(org=org, pk=int(pk))
    except (ValueError, TypeError, Webhook.DoesNotExist) as exc:
        raise Http404("No such webhook.") from exc


def delivery_list(*, org: Organization, webhook: Webhook | None = None, limit: int = 50) -> list[WebhookDelivery]:
    """The org's (or one webhook's) latest deliveries, newest first, with their events and their
    attempts (the latest first)."""
    deliveries = WebhookDelivery.objects.filter(webhook__org=org)
    if webhook is not None:
        deliveries = deliveries.filter(webhook=webhook)
    return list(deliveries.select_related("event", "webhook").prefetch_related(
        Prefetch("attempt_log", queryset=DeliveryAttempt.objects.order_by("-created", "-id")))
                .order_by("-created", "-id")[:limit])


def alerts_of(*, org: Organization) -> OrgAlerts:
    """The org's alert settings (the defaults until it changes them)."""
    return OrgAlerts.objects.filter(org=org).first() or OrgAlerts(org=org)


def deliveries_due(*, now=None) -> QuerySet[WebhookDelivery]:
    now = now or timezone.now()
    return WebhookDelivery.objects.filter(state=WebhookDelivery.State.PENDING, next_attempt__lte=now)
