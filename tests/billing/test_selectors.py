"""Reads of budgets: which ones hold a call, and the org's list."""

from decimal import Decimal

import pytest

from billing.selectors import budget_list, budgets_for_key
from billing.services import budget_set
from keys.services import team_create
from tests.analytics.factories import make_key

pytestmark = pytest.mark.django_db


@pytest.fixture
def key(org, team):
    return make_key(org, "agent", team=team)


@pytest.fixture
def other_key(org):
    return make_key(org, "other-agent")


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
