"""/api/v1/keys: issue, list, show, change, revoke and rotate virtual keys."""

from decimal import Decimal

import pytest
from rest_framework.test import APIClient

from billing.models import Budget
from billing.services import budget_set
from keys.models import AuditEvent, VirtualKey
from keys.selectors import key_authenticate
from keys.services import org_token_create, virtual_key_create, virtual_key_revoke
from tests.analytics.factories import make_log
from tests.api.conftest import session_client

pytestmark = pytest.mark.django_db

KEY_FIELDS = {"id", "name", "prefix", "team", "allowed_models", "rpm_limit", "tpm_limit", "max_parallel",
              "default_max_tokens", "run_budget", "run_max_steps", "loop_limit", "expires", "revoked", "metadata",
              "created", "budget", "spend"}


def test_it_lists_the_keys_of_the_org_only(admin_api, key, other_key):
    response = admin_api.get("/api/v1/keys")

    assert response.status_code == 200
    assert [row["id"] for row in response.json()["results"]] == [key.pk]
    assert response.json()["next"] is None


def test_a_listed_key_has_the_contract_fields_and_no_secret(api, key):
    row = api.get("/api/v1/keys").json()["results"][0]

    assert set(row) == KEY_FIELDS


def test_it_issues_a_key_and_shows_its_secret(admin_api, org):
    response = admin_api.post("/api/v1/keys", {"name": "planner", "allowed_models": ["gemini-2.5-flash"],
                                                "rpm_limit": 60, "metadata": {"owner": "ml"}}, format="json")

    assert response.status_code == 201
    body = response.json()
    assert key_authenticate(body["secret"]).pk == body["id"]
    assert (body["name"], body["allowed_models"], body["rpm_limit"], body["metadata"]) == (
        "planner", ["gemini-2.5-flash"], 60, {"owner": "ml"})
    assert VirtualKey.objects.get(pk=body["id"]).org == org


def test_the_secret_is_never_shown_again(api):
    created = api.post("/api/v1/keys", {"name": "planner"}, format="json").json()

    shown = api.get(f"/api/v1/keys/{created['id']}").json()
    listed = api.get("/api/v1/keys").json()["results"][0]

    assert "secret" not in shown
    assert "secret" not in listed
    assert created["secret"] not in str(shown) + str(listed)


def test_it_issues_a_key_with_its_budget(api):
    response = api.post("/api/v1/keys", {"name": "planner", "budget": "5.00", "budget_period": "daily"},
                              format="json")

    budget = Budget.objects.get(key_id=response.json()["id"])
    assert (budget.scope, budget.amount, budget.period) == ("key", Decimal("5.00"), "daily")
    assert response.json()["budget"]["amount"] == "5.000000"
    assert response.json()["budget"]["remaining"] == "5.000000"


def test_a_budget_without_a_period_has_none(api):
    response = api.post("/api/v1/keys", {"name": "planner", "budget": "5"}, format="json")

    assert response.json()["budget"]["period"] == "none"


def test_a_new_key_can_belong_to_a_team(api, team):
    response = api.post("/api/v1/keys", {"name": "planner", "team": team.pk}, format="json")

    assert response.json()["team"] == team.pk


@pytest.mark.parametrize(("body", "param"), [
    ({}, "name"),
    ({"name": ""}, "name"),
    ({"name": "x", "rpm_limit": 0}, "rpm_limit"),
    ({"name": "x", "tpm_limit": "lots"}, "tpm_limit"),
    ({"name": "x", "team": 999999}, "team"),
    ({"name": "x", "allowed_models": "gemini-2.5-flash"}, "allowed_models"),
    ({"name": "x", "expires": "next tuesday"}, "expires"),
    ({"name": "x", "metadata": ["a"]}, "metadata"),
    ({"name": "x", "budget": "-1"}, "budget"),
    ({"name": "x", "budget": "five"}, "budget"),
    ({"name": "x", "budget": "NaN"}, "budget"),
    ({"name": "x", "budget": "1", "budget_period": "yearly"}, "budget_period"),
    ({"name": "x", "budget_period": "daily"}, "budget_period"),
])
def test_it_refuses_a_bad_key(api, body, param):
    response = api.post("/api/v1/keys", body, format="json")

    assert response.status_code == 400
    error = response.json()["error"]
    assert (error["type"], error["param"]) == ("invalid_request_error", param)
    assert error["message"]
    assert VirtualKey.objects.count() == 0


def test_it_refuses_a_team_of_another_org(api, other_team):
    response = api.post("/api/v1/keys", {"name": "x", "team": other_team.pk}, format="json")

    assert response.status_code == 400
    assert response.json()["error"]["param"] == "team"


def test_malformed_json_is_a_400(api):
    response = api.post("/api/v1/keys", "{not json", content_type="application/json")

    assert response.status_code == 400
    assert response.json()["error"]["type"] == "invalid_request_error"


def test_it_shows_one_key_with_its_spend_against_its_budget(admin_api, key, org, system_actor):
    budget_set(org=org, key=key, amount="2.00", period="monthly", actor=system_actor)
    make_log(key.org, key, cost=Decimal("0.250000"))
    make_log(key.org, key, cost=Decimal("0.500000"))

    body = admin_api.get(f"/api/v1/keys/{key.pk}").json()

    assert (body["id"], body["prefix"], body["spend"]) == (key.pk, key.prefix, "0.750000")
    assert (body["budget"]["amount"], body["budget"]["spent"], body["budget"]["remaining"]) == (
        "2.000000", "0.750000", "1.250000")


def test_a_keys_default_output_limit_is_set_shown_and_cleared(admin_api, key):
    changed = admin_api.patch(f"/api/v1/keys/{key.pk}", {"default_max_tokens": 2048}, format="json")
    cleared = admin_api.patch(f"/api/v1/keys/{key.pk}", {"default_max_tokens": None}, format="json")
    refused = admin_api.patch(f"/api/v1/keys/{key.pk}", {"default_max_tokens": 0}, format="json")

    assert changed.json()["default_max_tokens"] == 2048
    assert cleared.json()["default_max_tokens"] is None
    assert refused.status_code == 400


def test_a_key_is_issued_with_its_run_limits_and_they_are_changed(admin_api):
    created = admin_api.post("/api/v1/keys", {"name": "agent", "run_budget": "0.50", "run_max_steps": 40,
                                              "loop_limit": 3}, format="json").json()
    changed = admin_api.patch(f"/api/v1/keys/{created['id']}", {"run_budget": None, "loop_limit": 0},
                              format="json").json()
    refused = admin_api.patch(f"/api/v1/keys/{created['id']}", {"loop_limit": -1}, format="json")

    assert (created["run_budget"], created["run_max_steps"], created["loop_limit"]) == ("0.500000", 40, 3)
    assert (changed["run_budget"], changed["run_max_steps"], changed["loop_limit"]) == (None, 40, 0)
    assert refused.status_code == 400


def test_it_changes_a_keys_limits(admin_api, key):
    response = admin_api.patch(f"/api/v1/keys/{key.pk}", {"rpm_limit": 30, "max_parallel": 2}, format="json")

    key.refresh_from_db()
    assert response.status_code == 200
    assert (key.rpm_limit, key.max_parallel, key.name) == (30, 2, "researcher")
    assert AuditEvent.objects.filter(action="key.update", target_id=str(key.pk)).exists()


def test_it_moves_a_key_out_of_its_team(api, key):
    response = api.patch(f"/api/v1/keys/{key.pk}", {"team": None}, format="json")

    key.refresh_from_db()
    assert (response.json()["team"], key.team) == (None, None)


def test_a_change_can_set_the_keys_budget(api, key):
    response = api.patch(f"/api/v1/keys/{key.pk}", {"budget": "3.50", "budget_period": "weekly"},
                               format="json")

    assert (response.json()["budget"]["amount"], response.json()["budget"]["period"]) == ("3.500000", "weekly")


def test_a_change_can_give_the_budget_a_new_period_alone(api, key, org, system_actor):
    budget_set(org=org, key=key, amount="2.00", period="monthly", actor=system_actor)

    response = api.patch(f"/api/v1/keys/{key.pk}", {"budget_period": "daily"}, format="json")

    assert (response.json()["budget"]["amount"], response.json()["budget"]["period"]) == ("2.000000", "daily")


def test_a_null_budget_removes_the_keys_budget(api, key, org, system_actor):
    budget_set(org=org, key=key, amount="2.00", actor=system_actor)

    response = api.patch(f"/api/v1/keys/{key.pk}", {"budget": None}, format="json")

    assert response.json()["budget"] is None
    assert not Budget.objects.filter(key=key).exists()


def test_a_new_period_needs_a_budget_to_apply_to(api, key):
    response = api.patch(f"/api/v1/keys/{key.pk}", {"budget_period": "daily"}, format="json")

    assert response.status_code == 400
    assert response.json()["error"]["param"] == "budget_period"


@pytest.mark.parametrize(("body", "param"), [
    ({"name": ""}, "name"),
    ({"max_parallel": -1}, "max_parallel"),
    ({"team": 999999}, "team"),
    ({"budget": "-5"}, "budget"),
])
def test_it_refuses_a_bad_change(api, key, body, param):
    response = api.patch(f"/api/v1/keys/{key.pk}", body, format="json")

    assert response.status_code == 400
    assert response.json()["error"]["param"] == param


def test_delete_revokes_the_key_and_keeps_it_listed(admin_api, key):
    response = admin_api.delete(f"/api/v1/keys/{key.pk}")

    key.refresh_from_db()
    assert response.status_code == 200
    assert key.revoked is not None
    assert response.json()["revoked"] is not None
    assert [row["id"] for row in admin_api.get("/api/v1/keys").json()["results"]] == [key.pk]


def test_revoking_is_audited_with_the_token_that_did_it(org, key, system_actor):
    token, secret = org_token_create(org=org, name="script", actor=system_actor)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {secret}")

    client.delete(f"/api/v1/keys/{key.pk}")

    event = AuditEvent.objects.get(action="key.revoke", target_id=str(key.pk))
    assert (event.actor_label, event.actor) == (f"token:{token.prefix}", None)


def test_revoking_is_audited_with_the_user_who_did_it(owner, org, key):
    session_client(owner).delete(f"/api/v1/keys/{key.pk}")

    event = AuditEvent.objects.get(action="key.revoke", target_id=str(key.pk))
    assert (event.actor_label, event.actor) == (owner.username, owner)


def test_rotate_gives_a_new_secret_and_the_old_one_stops_working(admin_api, org, system_actor):
    key, old_secret = virtual_key_create(org=org, name="planner", actor=system_actor)

    response = admin_api.post(f"/api/v1/keys/{key.pk}/rotate")

    new_secret = response.json()["secret"]
    assert response.status_code == 200
    assert key_authenticate(old_secret) is None
    assert key_authenticate(new_secret).pk == key.pk
    assert response.json()["prefix"] == new_secret.removeprefix("sk-nemo-")[:12]


def test_a_revoked_key_cannot_be_rotated(api, key, system_actor):
    virtual_key_revoke(key=key, actor=system_actor)

    response = api.post(f"/api/v1/keys/{key.pk}/rotate")

    assert response.status_code == 400
    assert response.json()["error"]["code"] == "key_revoked"


def test_the_key_list_pages_with_a_cursor(api, org, system_actor):
    made = [virtual_key_create(org=org, name=f"agent-{n}", actor=system_actor)[0].pk for n in range(5)]

    first = api.get("/api/v1/keys", {"limit": 2}).json()
    second = api.get("/api/v1/keys", {"limit": 2, "cursor": first["next"]}).json()
    third = api.get("/api/v1/keys", {"limit": 2, "cursor": second["next"]}).json()

    seen = [row["id"] for page in (first, second, third) for row in page["results"]]
    assert seen == list(reversed(made))
    assert third["next"] is None


@pytest.mark.parametrize("params", [{"cursor": "not-a-cursor"}, {"cursor": "WyJ4Il0"}, {"limit": 0},
                                    {"limit": "many"}])
def test_a_bad_page_request_is_a_400(api, key, params):
    response = api.get("/api/v1/keys", params)

    assert response.status_code == 400
    assert response.json()["error"]["type"] == "invalid_request_error"
