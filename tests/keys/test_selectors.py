"""Tenant isolation: another org's object looks exactly like one that does not exist."""

from decimal import Decimal

import pytest
from django.http import Http404

from billing.selectors import budget_get
from billing.services import budget_set
from keys.selectors import key_get, key_list, team_get, team_list
from keys.services import team_create, virtual_key_create

pytestmark = pytest.mark.django_db

MISSING_ID = 987_654_321


def http404_message(get, **kwargs) -> str:
    with pytest.raises(Http404) as raised:
        get(**kwargs)
    return str(raised.value)


@pytest.fixture
def other_key(other_org, system_actor):
    key, _ = virtual_key_create(org=other_org, name="their-agent", actor=system_actor)
    return key


@pytest.fixture
def other_team(other_org, system_actor):
    return team_create(org=other_org, name="their-team", actor=system_actor)


@pytest.fixture
def other_budget(other_org, other_key, system_actor):
    return budget_set(org=other_org, key=other_key, amount=Decimal("1.00"), actor=system_actor)


def test_key_get_finds_a_key_of_the_org(org, system_actor):
    key, _ = virtual_key_create(org=org, name="agent", actor=system_actor)
    assert key_get(org=org, pk=key.pk) == key


def test_key_get_refuses_another_orgs_key_like_a_missing_one(org, other_key):
    assert http404_message(key_get, org=org, pk=other_key.pk) == http404_message(key_get, org=org, pk=MISSING_ID)


def test_key_get_refuses_an_id_that_is_not_a_number_like_a_missing_one(org):
    assert http404_message(key_get, org=org, pk="1 or 1=1") == http404_message(key_get, org=org, pk=MISSING_ID)


def test_key_get_refuses_an_id_too_large_for_the_database_like_a_missing_one(org):
    assert http404_message(key_get, org=org, pk="9" * 30) == http404_message(key_get, org=org, pk=MISSING_ID)


def test_team_get_finds_a_team_of_the_org(org, system_actor):
    team = team_create(org=org, name="research", actor=system_actor)
    assert team_get(org=org, pk=team.pk) == team


def test_team_get_refuses_another_orgs_team_like_a_missing_one(org, other_team):
    assert http404_message(team_get, org=org, pk=other_team.pk) == http404_message(team_get, org=org, pk=MISSING_ID)


def test_budget_get_finds_a_budget_of_the_org(org, system_actor):
    budget = budget_set(org=org, amount=Decimal("10.00"), actor=system_actor)
    assert budget_get(org=org, pk=budget.pk) == budget


def test_budget_get_refuses_another_orgs_budget_like_a_missing_one(org, other_budget):
    assert http404_message(budget_get, org=org, pk=other_budget.pk) == http404_message(
        budget_get, org=org, pk=MISSING_ID
    )


def test_the_key_list_holds_only_the_orgs_keys(org, other_key, system_actor):
    key, _ = virtual_key_create(org=org, name="agent", actor=system_actor)
    assert list(key_list(org=org)) == [key]


def test_the_team_list_holds_only_the_orgs_teams(org, other_team, system_actor):
    team = team_create(org=org, name="research", actor=system_actor)
    assert list(team_list(org=org)) == [team]
