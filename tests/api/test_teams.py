"""/api/v1/teams: the teams of an org, with their budgets."""

import pytest

from billing.services import budget_set
from keys.models import AuditEvent, Team, VirtualKey

pytestmark = pytest.mark.django_db


def test_it_lists_the_teams_of_the_org_only(admin_api, team, other_team):
    response = admin_api.get("/api/v1/teams")

    assert response.status_code == 200
    assert [row["name"] for row in response.json()["results"]] == ["research"]
    assert response.json()["next"] is None


def test_a_team_shows_its_budget(admin_api, org, team, system_actor):
    budget_set(org=org, team=team, amount="20", period="monthly", actor=system_actor)

    body = admin_api.get(f"/api/v1/teams/{team.pk}").json()

    assert (body["id"], body["name"]) == (team.pk, "research")
    assert (body["budget"]["amount"], body["budget"]["period"], body["budget"]["spent"]) == (
        "20.000000", "monthly", "0.000000")


def test_a_team_without_a_budget_shows_null(api, team):
    assert api.get(f"/api/v1/teams/{team.pk}").json()["budget"] is None


def test_it_creates_a_team(admin_api, org):
    response = admin_api.post("/api/v1/teams", {"name": "support"}, format="json")

    assert response.status_code == 201
    assert Team.objects.get(pk=response.json()["id"]).org == org
    assert AuditEvent.objects.filter(action="team.create", target_id=str(response.json()["id"])).exists()


def test_it_renames_a_team(admin_api, team):
    response = admin_api.patch(f"/api/v1/teams/{team.pk}", {"name": "research-2"}, format="json")

    team.refresh_from_db()
    assert (response.status_code, team.name) == (200, "research-2")


def test_it_deletes_a_team_and_keeps_its_keys(admin_api, team, key):
    response = admin_api.delete(f"/api/v1/teams/{team.pk}")

    key.refresh_from_db()
    assert response.status_code == 204
    assert not Team.objects.filter(pk=team.pk).exists()
    assert VirtualKey.objects.filter(pk=key.pk, team=None).exists()


@pytest.mark.parametrize("body", [{}, {"name": ""}, {"name": "x" * 201}])
def test_it_refuses_a_bad_team(api, body):
    response = api.post("/api/v1/teams", body, format="json")

    assert response.status_code == 400
    assert response.json()["error"]["param"] == "name"


def test_two_teams_of_an_org_cannot_share_a_name(api, team):
    response = api.post("/api/v1/teams", {"name": "research"}, format="json")

    assert response.status_code == 400
    assert (response.json()["error"]["param"], response.json()["error"]["code"]) == ("name", "unique")


def test_a_rename_cannot_take_another_teams_name(api, org, team):
    other = Team.objects.create(org=org, name="support")

    response = api.patch(f"/api/v1/teams/{other.pk}", {"name": "research"}, format="json")

    assert response.status_code == 400
    assert response.json()["error"]["param"] == "name"


def test_another_org_may_use_the_same_team_name(api, other_team):
    assert api.post("/api/v1/teams", {"name": other_team.name}, format="json").status_code == 201


def test_the_team_list_pages_with_a_cursor(api, org):
    for name in ["a", "b", "c"]:
        Team.objects.create(org=org, name=name)

    first = api.get("/api/v1/teams", {"limit": 2}).json()
    second = api.get("/api/v1/teams", {"limit": 2, "cursor": first["next"]}).json()

    assert [row["name"] for row in first["results"] + second["results"]] == ["a", "b", "c"]
    assert second["next"] is None
