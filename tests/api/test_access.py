"""Who may call the management API, on which org, and what the others get."""

import pytest
from rest_framework.test import APIClient

from keys.audit import Actor
from keys.models import Membership, VirtualKey
from keys.services import membership_add, org_token_create, org_token_revoke, virtual_key_create
from tests.api.conftest import RUN_ID, session_client

pytestmark = pytest.mark.django_db

# Every endpoint about one object: (method, path with a {} for the object's id, which object, body).
OBJECT_ENDPOINTS = [
    ("get", "/api/v1/keys/{}", "key", None),
    ("patch", "/api/v1/keys/{}", "key", {"name": "renamed"}),
    ("delete", "/api/v1/keys/{}", "key", None),
    ("post", "/api/v1/keys/{}/rotate", "key", None),
    ("get", "/api/v1/teams/{}", "team", None),
    ("patch", "/api/v1/teams/{}", "team", {"name": "renamed"}),
    ("delete", "/api/v1/teams/{}", "team", None),
    ("get", "/api/v1/budgets/{}", "budget", None),
    ("patch", "/api/v1/budgets/{}", "budget", {"amount": "1.00"}),
    ("delete", "/api/v1/budgets/{}", "budget", None),
    ("get", "/api/v1/logs/{}", "log", None),
    ("get", "/api/v1/runs/{}", "run", None),
]

MISSING = {"key": 999999, "team": 999999, "budget": 999999, "log": "req_nothing", "run": "no-such-run"}

# Every write: (method, path, which object of the org, body that an admin would get through with).
WRITES = [
    ("post", "/api/v1/keys", None, {"name": "new-agent"}),
    ("patch", "/api/v1/keys/{}", "key", {"rpm_limit": 10}),
    ("delete", "/api/v1/keys/{}", "key", None),
    ("post", "/api/v1/keys/{}/rotate", "key", None),
    ("post", "/api/v1/teams", None, {"name": "new-team"}),
    ("patch", "/api/v1/teams/{}", "team", {"name": "renamed"}),
    ("delete", "/api/v1/teams/{}", "team", None),
    ("post", "/api/v1/budgets", None, {"scope": "org", "amount": "10.00"}),
    ("patch", "/api/v1/budgets/{}", "budget", {"amount": "1.00"}),
    ("delete", "/api/v1/budgets/{}", "budget", None),
]

READS = ["/api/v1/keys", "/api/v1/teams", "/api/v1/budgets", "/api/v1/logs", "/api/v1/runs", "/api/v1/spend",
         "/api/v1/credits", "/api/v1/models"]


@pytest.fixture
def ours(key, team, budget, log) -> dict:
    """The address of each object of the org in its endpoint."""
    return {"key": key.pk, "team": team.pk, "budget": budget.pk, "log": log.request_id, "run": RUN_ID}


def _call(client: APIClient, method: str, path: str, body: dict | None):
    return getattr(client, method)(path, body, format="json")


@pytest.mark.parametrize(("method", "path", "kind", "body"), OBJECT_ENDPOINTS)
def test_an_outsider_gets_the_404_of_a_missing_object_for_each_object_of_another_org(
    outsider_api, ours, method, path, kind, body
):
    theirs = _call(outsider_api, method, path.format(ours[kind]), body)
    missing = _call(outsider_api, method, path.format(MISSING[kind]), body)

    assert theirs.status_code == 404
    assert theirs.json()["error"]["type"] == "not_found_error"
    assert theirs.json() == missing.json()


def test_an_outsider_cannot_revoke_or_rotate_a_key_of_another_org(outsider_api, key):
    outsider_api.delete(f"/api/v1/keys/{key.pk}")
    outsider_api.post(f"/api/v1/keys/{key.pk}/rotate")

    key_after = VirtualKey.objects.get(pk=key.pk)
    assert (key_after.revoked, key_after.prefix) == (None, key.prefix)


def test_a_non_numeric_id_is_a_404_too(api):
    response = api.get("/api/v1/keys/abc")

    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"


@pytest.mark.parametrize(("method", "path", "kind", "body"), WRITES)
def test_a_member_may_not_write(member_api, ours, method, path, kind, body):
    response = _call(member_api, method, path.format(ours.get(kind)), body)

    assert response.status_code == 403
    assert response.json()["error"]["type"] == "permission_error"


@pytest.mark.parametrize("path", READS)
def test_a_member_may_read(member_api, ours, path):
    assert member_api.get(path).status_code == 200


@pytest.mark.parametrize("path", READS)
def test_a_caller_without_credentials_is_refused(path):
    response = APIClient().get(path)

    assert response.status_code == 401
    assert response.json()["error"]["type"] == "authentication_error"


def test_a_revoked_token_is_refused(org, system_actor):
    token, secret = org_token_create(org=org, name="old", actor=system_actor)
    org_token_revoke(token=token, actor=system_actor)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {secret}")

    response = client.get("/api/v1/keys")

    assert response.status_code == 401
    assert response.json()["error"]["code"] == "authentication_failed"


def test_a_user_without_an_org_is_refused(django_user_model):
    loner = django_user_model.objects.create_user(username="loner@example.com", password="pw-loner-123")

    response = session_client(loner).get("/api/v1/keys")

    assert response.status_code == 403
    assert response.json()["error"]["type"] == "permission_error"


def test_a_session_write_needs_the_csrf_token(owner, org):
    client = APIClient(enforce_csrf_checks=True)
    client.force_login(owner)

    response = client.post("/api/v1/teams", {"name": "no-csrf"}, format="json")

    assert response.status_code == 403
    assert "CSRF" in response.json()["error"]["message"]


def test_a_token_write_needs_no_csrf_token(org):
    _, secret = org_token_create(org=org, name="script", actor=Actor.system("test"))
    client = APIClient(enforce_csrf_checks=True)
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {secret}")

    assert client.post("/api/v1/teams", {"name": "from-a-script"}, format="json").status_code == 201


def test_the_org_header_picks_one_of_the_users_orgs(teammate, org, other_org, other_key, system_actor):
    membership_add(org=other_org, user=teammate, role=Membership.Role.ADMIN, actor=system_actor)
    client = session_client(teammate)

    response = client.get("/api/v1/keys", HTTP_X_NEMO_ORG=other_org.slug)

    assert [row["id"] for row in response.json()["results"]] == [other_key.pk]


def test_the_role_is_the_one_in_the_org_the_header_picks(teammate, org, other_org, system_actor):
    membership_add(org=other_org, user=teammate, role=Membership.Role.ADMIN, actor=system_actor)
    client = session_client(teammate)

    as_member = client.post("/api/v1/teams", {"name": "t"}, format="json", HTTP_X_NEMO_ORG=org.slug)
    as_admin = client.post("/api/v1/teams", {"name": "t"}, format="json", HTTP_X_NEMO_ORG=other_org.slug)

    assert (as_member.status_code, as_admin.status_code) == (403, 201)


def test_the_org_header_cannot_pick_someone_elses_org(owner_api, other_org, other_key):
    response = owner_api.get("/api/v1/keys", HTTP_X_NEMO_ORG=other_org.slug)

    assert response.status_code == 403


def test_an_unknown_org_header_gets_the_same_answer_as_someone_elses_org(owner_api, other_org):
    theirs = owner_api.get("/api/v1/keys", HTTP_X_NEMO_ORG=other_org.slug)
    unknown = owner_api.get("/api/v1/keys", HTTP_X_NEMO_ORG="no-such-org")

    assert (theirs.status_code, theirs.json()) == (unknown.status_code, unknown.json())


def test_the_dashboards_current_org_applies_to_the_session(teammate, org, other_org, other_key, system_actor):
    membership_add(org=other_org, user=teammate, role=Membership.Role.ADMIN, actor=system_actor)
    client = session_client(teammate)
    session = client.session
    session["org_id"] = other_org.pk
    session.save()

    response = client.get("/api/v1/keys")

    assert [row["id"] for row in response.json()["results"]] == [other_key.pk]


def test_a_token_acts_for_its_own_org_whatever_the_header_says(api, key, other_org, other_key):
    response = api.get("/api/v1/keys", HTTP_X_NEMO_ORG=other_org.slug)

    assert [row["id"] for row in response.json()["results"]] == [key.pk]


def test_a_trailing_slash_reaches_the_same_endpoint(api, key):
    response = api.get(f"/api/v1/keys/{key.pk}/")

    assert response.json()["id"] == key.pk


def test_an_unknown_format_is_bad_input(api):
    response = api.get("/api/v1/keys", {"format": "xml"})

    assert response.status_code == 400
    assert response.json()["error"]["param"] == "format"


def test_a_virtual_key_does_not_open_the_management_api(org, system_actor):
    _, secret = virtual_key_create(org=org, name="agent", actor=system_actor)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {secret}")

    response = client.get("/api/v1/keys")

    assert response.status_code == 401
    assert "org token" in response.json()["error"]["message"]
