"""The daily ledger: each UTC day of the request log settled into DailySpend."""

from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import pytest
from django.utils import timezone

from analytics.models import DailySpend, RequestLog
from analytics.tasks import roll_up_spend, settle_daily_spend
from keys.services import team_create
from tests.analytics.factories import make_key, make_log

pytestmark = pytest.mark.django_db

DAY = datetime(2026, 3, 10, tzinfo=UTC)


def ledger() -> list[tuple]:
    return [
        (row.org_id, row.day, row.team_id, row.key_id, row.model, row.cost, row.calls, row.prompt_tokens,
         row.completion_tokens)
        for row in DailySpend.objects.order_by("org_id", "day", "key_id", "model")
    ]


def test_a_day_is_settled_per_org_team_key_and_model(org, other_org, system_actor):
    team = team_create(org=org, name="research", actor=system_actor)
    planner, loner, stranger = make_key(org, "planner", team=team), make_key(org, "loner"), make_key(other_org, "x")
    make_log(org, planner, created=DAY + timedelta(hours=1), cost=Decimal("0.1"), prompt_tokens=10, completion_tokens=1)
    make_log(org, planner, created=DAY + timedelta(hours=2), cost=Decimal("0.2"), prompt_tokens=20, completion_tokens=2)
    make_log(org, planner, created=DAY + timedelta(hours=3), cost=Decimal("0.4"), model="gpt-4o", prompt_tokens=40,
             completion_tokens=4)
    make_log(org, loner, created=DAY + timedelta(hours=23, minutes=59), cost=Decimal("0.8"), status=502,
             prompt_tokens=80, completion_tokens=0)
    make_log(other_org, stranger, created=DAY, cost=Decimal("1.6"), prompt_tokens=160, completion_tokens=16)
    make_log(org, planner, created=DAY + timedelta(days=1), cost=Decimal("3.2"))

    written = settle_daily_spend.delay("2026-03-10").get()

    assert written == 4
    # The rollup before it rolled the next day up too; the day settled holds exactly its own rows.
    assert {row for row in ledger() if row[1] == DAY.date()} == {
        (org.pk, DAY.date(), team.pk, planner.pk, "gemini-2.5-flash", Decimal("0.3"), 2, 30, 3),
        (org.pk, DAY.date(), team.pk, planner.pk, "gpt-4o", Decimal("0.4"), 1, 40, 4),
        (org.pk, DAY.date(), None, loner.pk, "gemini-2.5-flash", Decimal("0.8"), 1, 80, 0),
        (other_org.pk, DAY.date(), None, stranger.pk, "gemini-2.5-flash", Decimal("1.6"), 1, 160, 16),
    }


def test_settling_a_day_twice_gives_the_same_ledger(org):
    key = make_key(org)
    make_log(org, key, created=DAY, cost=Decimal("0.5"))
    settle_daily_spend("2026-03-10")
    first = ledger()

    settle_daily_spend("2026-03-10")

    assert ledger() == first
    assert len(first) == 1


def test_settling_again_picks_up_calls_logged_since(org):
    key = make_key(org)
    make_log(org, key, created=DAY, cost=Decimal("0.5"))
    settle_daily_spend("2026-03-10")
    make_log(org, key, created=DAY + timedelta(hours=5), cost=Decimal("0.25"))

    settle_daily_spend("2026-03-10")

    assert [(row[5], row[6]) for row in ledger()] == [(Decimal("0.75"), 2)]


def test_by_default_yesterday_and_today_are_settled_again(org):
    key = make_key(org)
    now = timezone.now()
    make_log(org, key, created=now, cost=Decimal("0.1"))
    make_log(org, key, created=now - timedelta(days=1), cost=Decimal("0.2"))
    make_log(org, key, created=now - timedelta(days=2), cost=Decimal("0.4"))
    roll_up_spend()
    DailySpend.objects.all().delete()  # a damaged ledger

    settle_daily_spend()

    assert [(row[1], row[5]) for row in ledger()] == [
        (now.date() - timedelta(days=1), Decimal("0.2")), (now.date(), Decimal("0.1"))]


def test_settling_a_day_whose_log_was_pruned_keeps_its_ledger(org):
    key = make_key(org)
    make_log(org, key, created=DAY, cost=Decimal("0.5"))
    settle_daily_spend("2026-03-10")
    RequestLog.objects.all().delete()

    settle_daily_spend("2026-03-10")

    assert [(row[1], row[5]) for row in ledger()] == [(date(2026, 3, 10), Decimal("0.5"))]
