"""Celery tasks of billing."""

from celery import shared_task

from billing.reaper import reservations_reap


@shared_task(acks_late=True)
def reap_reservations(now: float | None = None) -> list[str]:
    """Beat, every minute: releases the reservations of calls that died with their worker (see
    billing.reaper). Safe to run twice or concurrently: each reservation is released once."""
    return reservations_reap(now=now)
