"""/api/v1/webhooks: an org's budget-alert webhooks, their secret shown once, scoped by org."""

import pytest

from keys.models import AuditEvent
from webhooks.models import Webhook
from webhooks.services import webhook_create

pytestmark = pytest.mark.django_db

URL = "https://hooks.example.com/nemo"
WEBHOOK_FIELDS = {"id", "url", "events", "enabled", "secret_hint", "created"}


@pytest.fixture
def webhook(org, system_actor) -> Webhook:
    return webhook_create(org=org, url=URL, secret="a-secret-of-the-org-0001", actor=system_actor)


@pytest.fixture
def other_webhook(other_org, system_actor) -> Webhook:
    return webhook_create(org=other_org, url="https://other.example.com/hook", actor=system_actor)


def test_it_creates_a_webhook_and_shows_the_secret_it_made_once(admin_api, org):
    response = admin_api.post("/api/v1/webhooks", {"url": URL}, format="json")

    assert response.status_code == 201, response.content
    body = response.json()
    assert set(body) == WEBHOOK_FIELDS | {"secret"}
    assert body["secret"].startswith("whsec_") and len(body["secret"]) > 30
    assert body["events"] == ["budget.threshold", "credits.low", "run.stopped"]
    stored = Webhook.objects.get(pk=body["id"])
    assert (stored.org, stored.secret) == (org, body["secret"])
    assert "secret" not in admin_api.get(f"/api/v1/webhooks/{body['id']}").json()
    assert AuditEvent.objects.filter(org=org, action="webhook.create").count() == 1


def test_it_keeps_the_secret_the_user_chose_and_the_events_asked_for(api):
    response = api.post("/api/v1/webhooks", {"url": URL, "secret": "my-own-signing-secret",
                                             "events": ["run.stopped"]}, format="json")

    assert response.status_code == 201, response.content
    assert response.json()["secret"] == "my-own-signing-secret"
    assert response.json()["secret_hint"] == "…cret"
    assert response.json()["events"] == ["run.stopped"]


def test_it_lists_the_webhooks_of_the_org_only(admin_api, webhook, other_webhook):
    response = admin_api.get("/api/v1/webhooks")

    assert response.status_code == 200
    assert [row["id"] for row in response.json()["results"]] == [webhook.pk]
    assert response.json()["next"] is None


def test_another_orgs_webhook_is_not_found_to_read_change_or_delete(outsider_api, webhook):
    assert outsider_api.get(f"/api/v1/webhooks/{webhook.pk}").status_code == 404
    assert outsider_api.patch(f"/api/v1/webhooks/{webhook.pk}", {"enabled": False}, format="json").status_code == 404
    assert outsider_api.delete(f"/api/v1/webhooks/{webhook.pk}").status_code == 404
    webhook.refresh_from_db()
    assert webhook.enabled


def test_it_changes_a_webhook_and_shows_a_new_secret_once(admin_api, webhook):
    response = admin_api.patch(f"/api/v1/webhooks/{webhook.pk}",
                               {"events": ["credits.low"], "enabled": False, "secret": "a-brand-new-secret-0002"},
                               format="json")

    assert response.status_code == 200, response.content
    assert (response.json()["events"], response.json()["enabled"]) == (["credits.low"], False)
    assert response.json()["secret"] == "a-brand-new-secret-0002"
    assert response.json()["recent_deliveries"] == []
    webhook.refresh_from_db()
    assert (webhook.events, webhook.enabled, webhook.secret) == (["credits.low"], False, "a-brand-new-secret-0002")


def test_it_deletes_a_webhook(admin_api, webhook):
    assert admin_api.delete(f"/api/v1/webhooks/{webhook.pk}").status_code == 204

    assert not Webhook.objects.filter(pk=webhook.pk).exists()


@pytest.mark.parametrize(("body", "param"), [
    ({}, "url"),
    ({"url": "ftp://hooks.example.com"}, "url"),
    ({"url": "https://127.0.0.1/hook"}, "url"),
    ({"url": URL, "events": ["budget.exceeded"]}, "events"),
    ({"url": URL, "events": []}, "events"),
    ({"url": URL, "secret": "short"}, "secret"),
])
def test_bad_input_is_a_400_naming_the_field(api, body, param):
    response = api.post("/api/v1/webhooks", body, format="json")

    assert response.status_code == 400, response.content
    assert response.json()["error"]["param"] == param
    assert not Webhook.objects.exists()


def test_a_member_reads_webhooks_but_cannot_add_one(member_api, webhook):
    assert member_api.get("/api/v1/webhooks").status_code == 200
    assert member_api.post("/api/v1/webhooks", {"url": URL}, format="json").status_code == 403
