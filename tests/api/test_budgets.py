"""/api/v1/budgets: the budgets of keys, teams and the org, with what was spent of them."""

from decimal import Decimal

import pytest

from billing.models import Budget
from billing.services import budget_set
from keys.models import AuditEvent
from tests.analytics.factories import make_log

pytestmark = pytest.mark.django_db

BUDGET_FIELDS = {"id", "scope", "key", "team", "amount", "period", "period_start", "spent", "remaining", "created"}


def test_it_lists_the_budgets_of_the_org_only(admin_api, budget, other_org, system_actor):
    budget_set(org=other_org, amount="1", actor=system_actor)

    response = admin_api.get("/api/v1/budgets")

    assert response.status_code == 200
    assert [row["id"] for row in response.json()["results"]] == [budget.pk]
    assert set(response.json()["results"][0]) == BUDGET_FIELDS


def test_a_budget_shows_what_was_spent_and_what_remains(admin_api, org, key, system_actor):
    budget = budget_set(org=org, key=key, amount="1.00", period="daily", actor=system_actor)
    make_log(key.org, key, cost=Decimal("0.400000"))

    body = admin_api.get(f"/api/v1/budgets/{budget.pk}").json()

    assert (body["scope"], body["key"], body["team"]) == ("key", key.pk, None)
    assert (body["amount"], body["spent"], body["remaining"]) == ("1.000000", "0.400000", "0.600000")
    assert body["period_start"] is not None


def test_an_overspent_budget_has_nothing_remaining(api, org, key, system_actor):
    budget = budget_set(org=org, key=key, amount="0.10", actor=system_actor)
    make_log(key.org, key, cost=Decimal("0.300000"))

    body = api.get(f"/api/v1/budgets/{budget.pk}").json()

    assert (body["spent"], body["remaining"], body["period_start"]) == ("0.300000", "0.000000", None)


def test_a_team_budget_counts_the_teams_calls(api, org, team, key, other_key, system_actor):
    budget = budget_set(org=org, team=team, amount="5", actor=system_actor)
    make_log(key.org, key, cost=Decimal("0.200000"))
    make_log(other_key.org, other_key, cost=Decimal("9.000000"))

    assert api.get(f"/api/v1/budgets/{budget.pk}").json()["spent"] == "0.200000"


def test_it_creates_the_org_budget(admin_api, org):
    response = admin_api.post("/api/v1/budgets", {"scope": "org", "amount": "100"}, format="json")

    assert response.status_code == 201
    assert Budget.objects.get(pk=response.json()["id"]).scope == "org"
    assert AuditEvent.objects.filter(action="budget.create", target_id=str(response.json()["id"])).exists()


def test_it_creates_a_team_budget(api, team):
    response = api.post("/api/v1/budgets", {"scope": "team", "team": team.pk, "amount": "20.5",
                                                   "period": "weekly"}, format="json")

    assert response.status_code == 201
    assert Budget.objects.filter(pk=response.json()["id"], scope="team", team=team, period="weekly").exists()


def test_it_creates_a_key_budget(api, key):
    response = api.post("/api/v1/budgets", {"scope": "key", "key": key.pk, "amount": "2", "period": "daily"},
                              format="json")

    assert response.status_code == 201
    assert (response.json()["scope"], response.json()["key"], response.json()["amount"]) == ("key", key.pk,
                                                                                           "2.000000")


def test_setting_a_budget_that_exists_changes_it(api, budget):
    response = api.post("/api/v1/budgets", {"scope": "org", "amount": "75"}, format="json")

    budget.refresh_from_db()
    assert (response.status_code, response.json()["id"], budget.amount) == (200, budget.pk, Decimal("75"))


def test_it_changes_a_budgets_amount_and_period(admin_api, budget):
    response = admin_api.patch(f"/api/v1/budgets/{budget.pk}", {"amount": "12.34", "period": "daily"},
                               format="json")

    budget.refresh_from_db()
    assert response.status_code == 200
    assert (budget.amount, budget.period, budget.scope) == (Decimal("12.34"), "daily", "org")


def test_a_change_of_the_period_alone_keeps_the_amount(api, budget):
    api.patch(f"/api/v1/budgets/{budget.pk}", {"period": "weekly"}, format="json")

    budget.refresh_from_db()
    assert (budget.amount, budget.period) == (Decimal("50"), "weekly")


def test_it_deletes_a_budget(admin_api, budget):
    response = admin_api.delete(f"/api/v1/budgets/{budget.pk}")

    assert response.status_code == 204
    assert not Budget.objects.filter(pk=budget.pk).exists()
    assert AuditEvent.objects.filter(action="budget.delete", target_id=str(budget.pk)).exists()


@pytest.mark.parametrize(("body", "param"), [
    ({"amount": "1"}, "scope"),
    ({"scope": "galaxy", "amount": "1"}, "scope"),
    ({"scope": "org"}, "amount"),
    ({"scope": "org", "amount": "-1"}, "amount"),
    ({"scope": "org", "amount": "lots"}, "amount"),
    ({"scope": "org", "amount": "1", "period": "yearly"}, "period"),
    ({"scope": "key", "amount": "1"}, "key"),
    ({"scope": "team", "amount": "1"}, "team"),
    ({"scope": "org", "amount": "1", "team": 1}, "team"),
    ({"scope": "key", "key": 999999, "amount": "1"}, "key"),
    ({"scope": "team", "team": 999999, "amount": "1"}, "team"),
])
def test_it_refuses_a_bad_budget(api, body, param):
    response = api.post("/api/v1/budgets", body, format="json")

    assert response.status_code == 400
    assert (response.json()["error"]["type"], response.json()["error"]["param"]) == ("invalid_request_error", param)
    assert not Budget.objects.exists()


def test_it_refuses_a_budget_for_a_key_of_another_org(api, other_key):
    response = api.post("/api/v1/budgets", {"scope": "key", "key": other_key.pk, "amount": "1"},
                              format="json")

    assert response.status_code == 400
    assert response.json()["error"]["param"] == "key"


@pytest.mark.parametrize("body", [{"amount": "-3"}, {"period": "hourly"}])
def test_it_refuses_a_bad_change(api, budget, body):
    response = api.patch(f"/api/v1/budgets/{budget.pk}", body, format="json")

    assert response.status_code == 400
    assert response.json()["error"]["param"] == next(iter(body))
