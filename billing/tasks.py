"""Celery tasks of billing."""

from datetime import date, timedelta

from celery import shared_task
from django.utils import timezone

from analytics.services import daily_spend_settle
from billing.reaper import reservations_reap


@shared_task(acks_late=True)
def settle_daily_spend(day: str | None = None) -> int:
    """Settles a UTC day (``YYYY-MM-DD``; by default yesterday and today) of the request log into
    the billing ledger. Idempotent: each run replaces the day's rows."""
    today = timezone.now().date()
    days = [date.fromisoformat(day)] if day else [today - timedelta(days=1), today]
    return sum(daily_spend_settle(day=each) for each in days)


@shared_task(acks_late=True)
def reap_reservations(now: float | None = None) -> list[str]:
    """Beat, every minute: releases the reservations of calls that died with their worker (see
    billing.reaper). Safe to run twice or concurrently: each reservation is released once."""
    return reservations_reap(now=now)
