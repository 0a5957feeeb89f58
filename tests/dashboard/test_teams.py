from decimal import Decimal

import pytest

from billing.models import Budget
from billing.services import budget_set, credits_grant
from keys.models import Team
from keys.services import team_create, virtual_key_create

pytestmark = pytest.mark.django_db


def test_the_page_shows_the_credit_balance_and_its_grants(owner_client, org, system_actor):
    credits_grant(org=org, amount=Decimal("20.00"), reason="top-up by support", actor=system_actor)

    page = owner_client.get("/teams/").content.decode()

    assert "$25.00" in page
    assert "sign-up credits" in page
    assert "top-up by support" in page


def test_the_balance_goes_down_with_spend(owner_client, key, make_log):
    make_log(key, cost=Decimal("1.25"))

    assert "$3.75" in owner_client.get("/teams/").content.decode()


def test_teams_show_their_budget_and_what_was_spent_against_it(owner_client, org, system_actor, make_log):
    team = team_create(org=org, name="research", actor=system_actor)
    budget_set(org=org, team=team, amount=Decimal("10.00"), period="monthly", actor=system_actor)
    key, _ = virtual_key_create(org=org, name="agent", team=team, actor=system_actor)
    make_log(key, cost=Decimal("4.00"))

    page = owner_client.get("/teams/").content.decode()

    assert "research" in page
    assert "$4.00" in page
    assert "$10.00" in page


def test_an_admin_creates_a_team_with_a_budget(admin_client, org):
    response = admin_client.post("/teams/new/", {"name": "support", "budget": "3.00", "budget_period": "weekly"})

    assert response.status_code == 302
    team = Team.objects.get(org=org, name="support")
    assert Budget.objects.get(team=team).amount == Decimal("3.00")


def test_a_team_name_is_unique_in_the_org(owner_client, org, system_actor):
    team_create(org=org, name="support", actor=system_actor)

    response = owner_client.post("/teams/new/", {"name": "support", "budget": "", "budget_period": "none"})

    assert response.status_code == 400
    assert "already a team" in response.content.decode()


def test_a_member_cannot_create_a_team(member_client, org):
    response = member_client.post("/teams/new/", {"name": "support", "budget": "", "budget_period": "none"})

    assert response.status_code == 403
    assert not Team.objects.filter(org=org).exists()


def test_a_member_sees_no_team_forms(member_client):
    page = member_client.get("/teams/").content.decode()

    assert "/teams/new/" not in page
    assert "/teams/budget/" not in page


def test_editing_a_team_renames_it_and_sets_its_budget(owner_client, org, system_actor):
    team = team_create(org=org, name="support", actor=system_actor)

    owner_client.post(f"/teams/{team.pk}/edit/", {"name": "helpdesk", "budget": "7.00", "budget_period": "daily"})

    team.refresh_from_db()
    assert team.name == "helpdesk"
    assert (Budget.objects.get(team=team).amount, Budget.objects.get(team=team).period) == (Decimal("7.00"), "daily")


def test_deleting_a_team_asks_first(owner_client, org, system_actor):
    team = team_create(org=org, name="support", actor=system_actor)

    response = owner_client.get(f"/teams/{team.pk}/delete/")

    assert "Delete team support?" in response.content.decode()
    assert Team.objects.filter(pk=team.pk).exists()


def test_an_owner_deletes_a_team(owner_client, org, system_actor):
    team = team_create(org=org, name="support", actor=system_actor)

    owner_client.post(f"/teams/{team.pk}/delete/")

    assert not Team.objects.filter(pk=team.pk).exists()


def test_the_owner_sets_the_org_budget(owner_client, org):
    owner_client.post("/teams/budget/", {"budget": "50.00", "budget_period": "monthly"})

    budget = Budget.objects.get(org=org, scope=Budget.Scope.ORG)
    assert (budget.amount, budget.period) == (Decimal("50.00"), "monthly")


def test_a_member_cannot_set_the_org_budget(member_client, org):
    response = member_client.post("/teams/budget/", {"budget": "50.00", "budget_period": "monthly"})

    assert response.status_code == 403
    assert not Budget.objects.filter(org=org, scope=Budget.Scope.ORG).exists()


@pytest.mark.parametrize("path", ["/teams/{pk}/edit/", "/teams/{pk}/delete/"])
def test_an_outsider_gets_404_for_another_orgs_team(outsider_client, org, system_actor, path):
    team = team_create(org=org, name="support", actor=system_actor)

    assert outsider_client.post(path.format(pk=team.pk), {"name": "mine", "budget_period": "none"}).status_code == 404
    assert Team.objects.get(pk=team.pk).name == "support"


def test_an_outsider_does_not_see_another_orgs_teams_or_credits(outsider_client, org, system_actor):
    team_create(org=org, name="acme-secret-team", actor=system_actor)
    credits_grant(org=org, amount=Decimal("1000.00"), reason="acme enterprise deal", actor=system_actor)

    page = outsider_client.get("/teams/").content.decode()

    assert "acme-secret-team" not in page
    assert "acme enterprise deal" not in page
