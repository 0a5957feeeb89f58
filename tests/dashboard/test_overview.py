"""The overview, the page after sign-in: today and this month, credits, keys near budget, calls per hour."""

import json
import re
from datetime import UTC, timedelta
from decimal import Decimal

import pytest
from django.utils import timezone

from billing.services import budget_set
from keys.services import virtual_key_create

pytestmark = pytest.mark.django_db

FELL_BACK = [{"deployment": "flash-vertex", "outcome": "timeout", "latency_ms": 30000},
             {"deployment": "flash-backup", "outcome": "ok", "latency_ms": 640}]


def _stat(page: str, scope: str, name: str) -> str:
    section = page.split(f'data-activity="{scope}"')[1]
    return re.search(rf"data-{name}>(.*?)</div>", section).group(1)


@pytest.fixture
def today_calls(key, make_log):
    now = timezone.now()
    make_log(key, latency_ms=100, cost=Decimal("0.10"), created=now)
    make_log(key, latency_ms=200, cost=Decimal("0.20"), created=now, attempts=FELL_BACK)
    make_log(key, latency_ms=300, cost=Decimal("0"), status=502, created=now)
    make_log(key, latency_ms=4000, cost=Decimal("0"), status=404, model="gpt-9", created=now)


def test_signing_in_lands_on_the_overview(client, owner, org):
    response = client.post("/login/", {"username": "owner@example.com", "password": "pw-owner-123"}, follow=True)

    assert response.redirect_chain[-1][0] == "/overview/"


def test_the_overview_sums_up_today(owner_client, today_calls):
    page = owner_client.get("/overview/").content.decode()

    assert _stat(page, "today", "spend") == "$0.30"
    assert _stat(page, "today", "calls") == "4"
    assert _stat(page, "today", "error-rate") == "50.0%"
    assert _stat(page, "today", "latency") == "200 ms / 4.00 s"
    assert _stat(page, "today", "fallbacks") == "1"


def test_the_month_counts_calls_before_today_and_today_does_not(owner_client, key, make_log):
    now = timezone.now().astimezone(UTC)
    if now.day == 1:
        pytest.skip("on the 1st of a month, this month is today")
    make_log(key, cost=Decimal("1.25"), created=now.replace(hour=0, minute=0) - timedelta(hours=1))

    page = owner_client.get("/overview/").content.decode()

    assert _stat(page, "today", "calls") == "0" and _stat(page, "today", "error-rate") == "—"
    assert _stat(page, "month", "spend") == "$1.25" and _stat(page, "month", "calls") == "1"


def test_the_overview_shows_credits_and_the_keys_near_their_budget(owner_client, org, key, system_actor, make_log):
    calm, _ = virtual_key_create(org=org, name="calm-agent", actor=system_actor)
    budget_set(org=org, key=key, amount=Decimal("1.00"), period="none", actor=system_actor)
    budget_set(org=org, key=calm, amount=Decimal("10.00"), period="none", actor=system_actor)
    make_log(key, cost=Decimal("0.85"))
    make_log(calm, cost=Decimal("0.85"))

    page = owner_client.get("/overview/").content.decode()

    near = page.split("data-near-budget")[1]
    assert "researcher" in near and "calm-agent" not in near
    assert re.search(r"data-credits>\$3\.30<", page)


def test_the_calls_chart_has_every_hour_of_the_last_day(owner_client, today_calls):
    page = owner_client.get("/overview/").content.decode()

    hours = json.loads(re.search(r'<script id="overview-data" type="application/json">(.*?)</script>', page,
                                 re.S).group(1))
    assert len(hours) in (24, 25)
    assert sum(hour["calls"] for hour in hours) == 4 and sum(hour["errors"] for hour in hours) == 2


def test_the_overview_leaves_out_other_orgs(owner_client, other_key, make_log):
    make_log(other_key, cost=Decimal("9.00"))

    page = owner_client.get("/overview/").content.decode()

    assert _stat(page, "today", "calls") == "0" and "their-agent" not in page


def test_an_org_without_keys_is_told_what_to_do_next(owner_client):
    page = owner_client.get("/overview/").content.decode()

    assert "data-empty-overview" in page and "Issue a key" in page


def test_a_busy_window_counts_every_call_and_reads_latency_from_its_latest(owner_client, key, make_log, monkeypatch):
    monkeypatch.setattr("dashboard.selectors.ACTIVITY_SAMPLE", 2)
    now = timezone.now()
    make_log(key, latency_ms=9000, cost=Decimal("0.10"), status=502, attempts=FELL_BACK,
             created=now)
    make_log(key, latency_ms=100, cost=Decimal("0.10"), created=now)
    make_log(key, latency_ms=300, cost=Decimal("0.10"), created=now)

    page = owner_client.get("/overview/").content.decode()

    # Calls, spend and failures of all three; latency and fallbacks of the latest two (by id, at one time).
    assert (_stat(page, "today", "calls"), _stat(page, "today", "spend")) == ("3", "$0.30")
    assert _stat(page, "today", "error-rate") == "33.3%"
    assert _stat(page, "today", "latency") == "100 ms / 300 ms"
    assert _stat(page, "today", "fallbacks") == "0"
    assert "of the latest 2 calls" in page.split('data-activity="today"')[1]
