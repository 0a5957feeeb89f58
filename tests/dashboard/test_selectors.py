"""Reads that weigh spend (the request log) against budgets and credits (billing)."""

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from billing.models import Budget
from billing.services import budget_set, credits_grant
from dashboard.selectors import budget_spent, credit_balance, key_spend, run_with_budget
from keys.services import organization_create
from tests.analytics.factories import make_key

pytestmark = pytest.mark.django_db


@pytest.fixture
def team_key(org, team):
    return make_key(org, "team-agent", team=team)


def test_the_balance_is_grants_minus_logged_spend(org, key, make_log, system_actor):
    credits_grant(org=org, amount=Decimal("10"), reason="top-up", actor=system_actor)
    make_log(key, cost=Decimal("0.000125"))
    make_log(key, cost=Decimal("1.5"))
    assert credit_balance(org=org) == Decimal("13.499875")


def test_the_balance_ignores_other_orgs_spend(org, other_key, make_log):
    make_log(other_key, cost=Decimal("2.00"))
    assert credit_balance(org=org) == Decimal("5.00")


def test_the_balance_of_an_org_without_grants_or_spend_is_zero(system_actor):
    bare = organization_create(name="Bare", actor=system_actor)
    assert credit_balance(org=bare) == Decimal("0")


def test_a_monthly_key_budget_counts_the_keys_spend_this_month(org, key, team_key, make_log, system_actor):
    budget = budget_set(org=org, key=key, amount=Decimal("5"), period=Budget.Period.MONTHLY, actor=system_actor)
    make_log(key, cost=Decimal("1"), created=datetime(2026, 10, 31, 23, 59, tzinfo=UTC))
    make_log(key, cost=Decimal("2"), created=datetime(2026, 11, 2, tzinfo=UTC))
    make_log(team_key, cost=Decimal("4"), created=datetime(2026, 11, 2, tzinfo=UTC))
    assert budget_spent(budget=budget, now=datetime(2026, 11, 25, tzinfo=UTC)) == Decimal("2")


def test_a_team_budget_counts_every_key_of_the_team(org, key, team, team_key, make_log, system_actor):
    budget = budget_set(org=org, team=team, amount=Decimal("5"), actor=system_actor)
    make_log(team_key, cost=Decimal("1"))
    make_log(make_key(org, "teammate-agent", team=team), cost=Decimal("2"))
    make_log(key, cost=Decimal("4"))
    assert budget_spent(budget=budget) == Decimal("3")


def test_an_org_budget_without_a_period_counts_all_spend(org, key, team_key, make_log, system_actor):
    budget = budget_set(org=org, amount=Decimal("50"), actor=system_actor)
    make_log(key, cost=Decimal("1"), created=datetime(2020, 1, 1, tzinfo=UTC))
    make_log(team_key, cost=Decimal("2"))
    assert budget_spent(budget=budget) == Decimal("3")


def test_a_budget_with_no_spend_has_spent_zero(org, key, system_actor):
    budget = budget_set(org=org, key=key, amount=Decimal("5"), actor=system_actor)
    assert budget_spent(budget=budget) == Decimal("0")


def test_key_spend_counts_each_key_in_its_budget_period(org, key, make_log, system_actor):
    lifetime = make_key(org, "no-budget")
    budget_set(org=org, key=key, amount=Decimal("1"), period="daily", actor=system_actor)
    now = datetime.now(UTC)
    make_log(key, cost=Decimal("0.2"), created=now)
    make_log(key, cost=Decimal("0.7"), created=now - timedelta(days=2))
    make_log(lifetime, cost=Decimal("0.4"), created=now - timedelta(days=40))

    assert key_spend(org=org, now=now) == {key.pk: Decimal("0.200000"), lifetime.pk: Decimal("0.400000")}


def test_key_spend_of_another_org_holds_none_of_ours(key, other_org, make_log):
    make_log(key, cost=Decimal("0.2"))
    assert key_spend(org=other_org) == {}


def test_a_run_shows_its_keys_budget(org, key, make_log, system_actor):
    budget_set(org=org, key=key, amount=Decimal("5.00"), period="daily", actor=system_actor)
    make_log(key, run_id="run-1", cost=Decimal("0.001000"))

    run = run_with_budget(org=org, run_id="run-1")

    assert (run.spend, run.budget, run.budget_period) == (Decimal("0.001000"), Decimal("5.000000"), "daily")


def test_a_run_of_a_key_without_a_budget_shows_none(org, key, make_log):
    make_log(key, run_id="run-1")

    run = run_with_budget(org=org, run_id="run-1")

    assert (run.budget, run.budget_period) == (None, None)
