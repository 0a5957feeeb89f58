"""Budget alerts found in the committed request log: thresholds once per threshold and period,
credits.low once per crossing, run.stopped once per run; each an event with a delivery per
subscribed webhook."""

import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from django.db import IntegrityError, transaction

from billing.services import budget_set, credits_grant
from tests.analytics.factories import make_key, make_log
from webhooks.alerts import alerts_scan
from webhooks.models import OrgAlerts, WebhookDelivery, WebhookEvent
from webhooks.services import alerts_settings_update, webhook_create

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("no_lag")]

URL = "https://hooks.example.com/nemo"


@pytest.fixture
def webhook(org, system_actor):
    return webhook_create(org=org, url=URL, actor=system_actor)


def spend(org, key, *costs: str, created: datetime | None = None, **fields) -> None:
    for cost in costs:
        make_log(org, key, cost=Decimal(cost), created=created or datetime.now(UTC), **fields)


def fired(org, type: str) -> list[dict]:
    events = WebhookEvent.objects.filter(org=org, type=type).order_by("id")
    return [json.loads(event.body)["data"] for event in events]


def thresholds(org) -> list[tuple[str, str, int]]:
    return [(data["budget"]["scope"], data["period"], data["threshold"]) for data in fired(org, "budget.threshold")]


@pytest.mark.usefixtures("webhook")
def test_a_key_budget_fires_each_threshold_once_as_spend_crosses_it(org, key, system_actor):
    budget_set(org=org, key=key, amount=Decimal("1.00"), period="daily", actor=system_actor)
    today = datetime.now(UTC).strftime("%Y-%m-%d")

    spend(org, key, "0.30")
    alerts_scan(org=org)
    assert thresholds(org) == []
    spend(org, key, "0.25")
    alerts_scan(org=org)
    alerts_scan(org=org)
    assert thresholds(org) == [("key", today, 50)]
    spend(org, key, "0.30", "0.20")
    alerts_scan(org=org)
    spend(org, key, "0.10")
    alerts_scan(org=org)

    assert thresholds(org) == [("key", today, 50), ("key", today, 80), ("key", today, 100)]
    assert fired(org, "budget.threshold")[-1]["spent"] == "1.050000"


@pytest.mark.usefixtures("webhook")
def test_a_budget_fires_its_thresholds_again_in_its_next_period(org, key, system_actor):
    budget_set(org=org, key=key, amount=Decimal("1.00"), period="daily", actor=system_actor)
    now = datetime.now(UTC)
    yesterday, today = (now - timedelta(days=1)).strftime("%Y-%m-%d"), now.strftime("%Y-%m-%d")

    spend(org, key, "0.90", created=now - timedelta(days=1))
    alerts_scan(org=org)
    spend(org, key, "0.60", created=now)
    alerts_scan(org=org)

    assert thresholds(org) == [("key", yesterday, 50), ("key", yesterday, 80), ("key", today, 50)]


@pytest.mark.usefixtures("webhook")
def test_team_and_org_budgets_fire_for_the_calls_of_their_keys(org, team, key, system_actor):
    budget_set(org=org, team=team, amount=Decimal("2.00"), actor=system_actor)
    budget_set(org=org, amount=Decimal("4.00"), period="monthly", actor=system_actor)
    month = datetime.now(UTC).strftime("%Y-%m")

    spend(org, key, "1.00", "0.10")
    alerts_scan(org=org)

    assert thresholds(org) == [("team", "all", 50)]
    spend(org, make_key(org, "no-team"), "1.00")
    alerts_scan(org=org)
    assert thresholds(org) == [("team", "all", 50), ("org", month, 50)]


@pytest.mark.usefixtures("webhook")
def test_credits_low_fires_once_per_crossing_below_the_org_setting(org, key, system_actor):
    alerts_settings_update(org=org, credits_low_below=Decimal("2.00"), actor=system_actor)

    spend(org, key, "2.50")
    alerts_scan(org=org)
    assert fired(org, "credits.low") == []
    spend(org, key, "0.60")
    alerts_scan(org=org)
    spend(org, key, "0.50")
    alerts_scan(org=org)
    assert fired(org, "credits.low") == [{"balance": "1.900000", "threshold": "2.000000"}]

    credits_grant(org=org, amount=Decimal("5.00"), reason="top-up", actor=system_actor)
    alerts_scan(org=org)
    spend(org, key, "5.00")
    alerts_scan(org=org)

    assert [data["balance"] for data in fired(org, "credits.low")] == ["1.900000", "1.400000"]
    assert OrgAlerts.objects.get(org=org).credits_low_crossings == 2


@pytest.mark.usefixtures("webhook")
def test_credits_low_is_a_decimal_setting_of_one_dollar_by_default(org, key):
    spend(org, key, "4.10")
    alerts_scan(org=org)

    assert fired(org, "credits.low") == [{"balance": "0.900000", "threshold": "1.000000"}]


@pytest.mark.usefixtures("webhook")
def test_a_run_stopped_by_its_envelope_or_the_loop_guard_fires_once_per_run(org, key):
    spend(org, key, "0.01", run_id="envelope-run")
    spend(org, key, "0", "0", run_id="envelope-run", status=402, error_code="budget_exceeded", error_param="run")
    spend(org, key, "0", run_id="looping-run", status=429, error_code="run_loop_detected")
    spend(org, key, "0", run_id="key-budget-run", status=402, error_code="budget_exceeded", error_param="key")
    spend(org, key, "0", run_id="rate-limited-run", status=429, error_code="rate_limit_exceeded")
    alerts_scan(org=org)
    spend(org, key, "0", run_id="looping-run", status=429, error_code="run_loop_detected")
    alerts_scan(org=org)

    stopped = fired(org, "run.stopped")
    assert [(data["run_id"], data["reason"], data["status"]) for data in stopped] == [
        ("envelope-run", "run_budget", 402), ("looping-run", "loop_detected", 429)]
    assert stopped[0]["key"] == key.prefix


def test_each_event_gets_a_delivery_for_each_enabled_webhook_subscribed_to_it(org, key, system_actor):
    everything = webhook_create(org=org, url=URL, actor=system_actor)
    runs_only = webhook_create(org=org, url="https://runs.example.com/hook", events=["run.stopped"],
                               actor=system_actor)
    credits_only = webhook_create(org=org, url="https://credits.example.com/hook", events=["credits.low"],
                                  actor=system_actor)
    credits_only.enabled = False
    credits_only.save()

    spend(org, key, "4.50")
    spend(org, key, "0", run_id="looping-run", status=429, error_code="run_loop_detected")
    alerts_scan(org=org)

    deliveries = WebhookDelivery.objects.order_by("id")
    assert sorted((d.webhook_id, d.event.type) for d in deliveries) == sorted([
        (everything.pk, "credits.low"), (everything.pk, "run.stopped"), (runs_only.pk, "run.stopped")])


def test_the_log_before_the_first_webhook_fires_nothing(org, key, system_actor):
    spend(org, key, "0", run_id="old-run", status=429, error_code="run_loop_detected")
    webhook_create(org=org, url=URL, actor=system_actor)

    alerts_scan(org=org)

    assert WebhookEvent.objects.count() == 0


def test_a_webhook_added_after_the_last_one_went_hears_nothing_of_the_time_between(org, key, system_actor):
    first = webhook_create(org=org, url=URL, actor=system_actor)
    first.delete()
    spend(org, key, "0", run_id="unwatched-run", status=429, error_code="run_loop_detected")
    webhook_create(org=org, url=URL, actor=system_actor)
    spend(org, key, "0", run_id="watched-run", status=429, error_code="run_loop_detected")

    alerts_scan(org=org)

    assert [data["run_id"] for data in fired(org, "run.stopped")] == ["watched-run"]


@pytest.mark.usefixtures("webhook")
def test_a_scan_that_sees_the_same_rows_again_fires_nothing_twice(org, key):
    spend(org, key, "0", run_id="looping-run", status=429, error_code="run_loop_detected")
    spend(org, key, "4.50")
    alerts_scan(org=org)
    OrgAlerts.objects.filter(org=org).update(last_scanned_id=0, credits_low=False, credits_low_crossings=0)

    alerts_scan(org=org)

    assert sorted(WebhookEvent.objects.values_list("type", flat=True)) == ["credits.low", "run.stopped"]
    assert WebhookDelivery.objects.count() == 2


@pytest.mark.usefixtures("webhook")
def test_the_database_refuses_a_second_copy_of_an_event(org, key):
    spend(org, key, "0", run_id="looping-run", status=429, error_code="run_loop_detected")
    alerts_scan(org=org)
    event = WebhookEvent.objects.get()

    with pytest.raises(IntegrityError), transaction.atomic():
        WebhookEvent.objects.create(org=org, type=event.type, dedupe_key=event.dedupe_key, body=event.body)


def test_rows_still_inside_the_outbox_lag_wait_for_the_next_scan(org, key, system_actor, settings):
    webhook_create(org=org, url=URL, actor=system_actor)
    settings.NEMO_EXPORT_SAFETY_LAG = timedelta(minutes=5)
    spend(org, key, "0", run_id="looping-run", status=429, error_code="run_loop_detected")

    alerts_scan(org=org)
    assert WebhookEvent.objects.count() == 0
    settings.NEMO_EXPORT_SAFETY_LAG = timedelta(0)
    alerts_scan(org=org)
    assert WebhookEvent.objects.count() == 1
