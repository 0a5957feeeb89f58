"""Reads of budgets, credits and spend: the request log is the ledger."""

import itertools
from datetime import UTC, datetime
from decimal import Decimal

import pytest

from analytics.models import RequestLog
from billing.models import Budget
from billing.selectors import budget_list, budget_spent, budgets_for_key, credit_balance, spend_since
from billing.services import budget_set, credits_grant
from keys.services import organization_create, team_create, virtual_key_create

pytestmark = pytest.mark.django_db

_request_ids = itertools.count(1)


def log_call(*, key, cost: str, created: datetime | None = None) -> RequestLog:
    return RequestLog.objects.create(
        request_id=f"req-{next(_request_ids)}",
        org=key.org,
        key=key,
        team=key.team,
        key_prefix=key.prefix,
        model="gemini-2.5-flash",
        status=200,
        cost=Decimal(cost),
        created=created or datetime.now(UTC),
    )


@pytest.fixture
def team(org, system_actor):
    return team_create(org=org, name="research", actor=system_actor)


@pytest.fixture
def key(org, team, system_actor):
    key, _ = virtual_key_create(org=org, name="agent", team=team, actor=system_actor)
    return key


@pytest.fixture
def other_key(org, system_actor):
    key, _ = virtual_key_create(org=org, name="other-agent", actor=system_actor)
    return key


def test_the_balance_is_grants_minus_logged_spend(org, key, system_actor):
    credits_grant(org=org, amount=Decimal("10"), reason="top-up", actor=system_actor)
    log_call(key=key, cost="0.000125")
    log_call(key=key, cost="1.5")
    assert credit_balance(org=org) == Decimal("13.499875")


def test_the_balance_ignores_other_orgs_spend(org, other_org, system_actor):
    their_key, _ = virtual_key_create(org=other_org, name="theirs", actor=system_actor)
    log_call(key=their_key, cost="2.00")
    assert credit_balance(org=org) == Decimal("5.00")


def test_the_balance_of_an_org_without_grants_or_spend_is_zero(system_actor):
    bare = organization_create(name="Bare", credits=Decimal("0"), actor=system_actor)
    assert credit_balance(org=bare) == Decimal("0")


def test_spend_since_counts_only_rows_from_then_on(org, key):
    log_call(key=key, cost="1", created=datetime(2026, 10, 31, 23, 59, tzinfo=UTC))
    log_call(key=key, cost="2", created=datetime(2026, 11, 1, tzinfo=UTC))
    assert spend_since(org_id=org.pk, since=datetime(2026, 11, 1, tzinfo=UTC)) == Decimal("2")


def test_a_monthly_key_budget_counts_the_keys_spend_this_month(org, key, other_key, system_actor):
    budget = budget_set(org=org, key=key, amount=Decimal("5"), period=Budget.Period.MONTHLY, actor=system_actor)
    log_call(key=key, cost="1", created=datetime(2026, 10, 31, 23, 59, tzinfo=UTC))
    log_call(key=key, cost="2", created=datetime(2026, 11, 2, tzinfo=UTC))
    log_call(key=other_key, cost="4", created=datetime(2026, 11, 2, tzinfo=UTC))
    assert budget_spent(budget=budget, now=datetime(2026, 11, 25, tzinfo=UTC)) == Decimal("2")


def test_a_team_budget_counts_every_key_of_the_team(org, key, other_key, team, system_actor):
    teammate_key, _ = virtual_key_create(org=org, name="teammate-agent", team=team, actor=system_actor)
    budget = budget_set(org=org, team=team, amount=Decimal("5"), actor=system_actor)
    log_call(key=key, cost="1")
    log_call(key=teammate_key, cost="2")
    log_call(key=other_key, cost="4")
    assert budget_spent(budget=budget) == Decimal("3")


def test_an_org_budget_without_a_period_counts_all_spend(org, key, other_key, system_actor):
    budget = budget_set(org=org, amount=Decimal("50"), actor=system_actor)
    log_call(key=key, cost="1", created=datetime(2020, 1, 1, tzinfo=UTC))
    log_call(key=other_key, cost="2")
    assert budget_spent(budget=budget) == Decimal("3")


def test_a_budget_with_no_spend_has_spent_zero(org, key, system_actor):
    budget = budget_set(org=org, key=key, amount=Decimal("5"), actor=system_actor)
    assert budget_spent(budget=budget) == Decimal("0")


def test_a_call_is_held_to_its_key_team_and_org_budgets(org, key, team, system_actor):
    key_budget = budget_set(org=org, key=key, amount=Decimal("1"), actor=system_actor)
    team_budget = budget_set(org=org, team=team, amount=Decimal("2"), actor=system_actor)
    org_budget = budget_set(org=org, amount=Decimal("3"), actor=system_actor)
    assert budgets_for_key(key=key) == {"key": key_budget, "team": team_budget, "org": org_budget}


def test_a_call_is_not_held_to_other_keys_or_teams_budgets(org, key, other_key, system_actor):
    other_team = team_create(org=org, name="other", actor=system_actor)
    budget_set(org=org, key=other_key, amount=Decimal("1"), actor=system_actor)
    budget_set(org=org, team=other_team, amount=Decimal("2"), actor=system_actor)
    assert budgets_for_key(key=key) == {}


def test_a_call_is_not_held_to_another_orgs_budget(org, other_org, key, system_actor):
    budget_set(org=other_org, amount=Decimal("1"), actor=system_actor)
    assert budgets_for_key(key=key) == {}


def test_the_budget_list_holds_only_the_orgs_budgets(org, other_org, key, system_actor):
    ours = budget_set(org=org, key=key, amount=Decimal("1"), actor=system_actor)
    budget_set(org=other_org, amount=Decimal("1"), actor=system_actor)
    assert list(budget_list(org=org)) == [ours]
