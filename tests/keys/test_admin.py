"""The support staff's admin: every page opens to staff alone, searches find what support looks for, and
changes are audited. The org's own page is dashboard.admin's (tests/dashboard/test_admin.py)."""

from datetime import timedelta
from decimal import Decimal

import pytest
from django.urls import reverse
from django.utils import timezone

from analytics.models import ExportSink, RequestLog
from billing.models import Budget, CatalogModel, CreditGrant
from billing.services import budget_set, credits_grant
from keys.audit import Actor
from keys.models import AuditEvent, Membership, OrgToken, Team, VirtualKey
from keys.services import org_token_create, team_create, virtual_key_create, virtual_key_revoke

pytestmark = pytest.mark.django_db

ADMIN_PAGES = [
    ("keys", "organization"),
    ("keys", "team"),
    ("keys", "membership"),
    ("keys", "virtualkey"),
    ("keys", "orgtoken"),
    ("keys", "auditevent"),
    ("billing", "budget"),
    ("billing", "creditgrant"),
    ("billing", "catalogmodel"),
    ("analytics", "dailyspend"),
    ("analytics", "requestlog"),
    ("analytics", "exportsink"),
]


@pytest.fixture
def key_and_secret(org, team, system_actor) -> tuple[VirtualKey, str]:
    return virtual_key_create(org=org, name="researcher", team=team, actor=system_actor)


@pytest.fixture
def key(key_and_secret) -> VirtualKey:
    return key_and_secret[0]


@pytest.fixture
def other_key(other_org, system_actor) -> VirtualKey:
    key, _ = virtual_key_create(org=other_org, name="their-agent", actor=system_actor)
    return key


@pytest.fixture
def call(org, key) -> RequestLog:
    return RequestLog.objects.create(
        request_id="req-admin-1", org=org, team=key.team, key=key, key_prefix=key.prefix, run_id="run-7",
        model="gemini-2.5-flash", deployment="flash-mock", provider="mock", status=200, cost=Decimal("0.000420"),
        cache="miss", attempts=[{"deployment": "flash-mock", "outcome": "ok", "latency_ms": 12}],
    )


@pytest.fixture
def sink(org) -> ExportSink:
    return ExportSink.objects.create(
        org=org, type=ExportSink.Type.LANGFUSE, consecutive_failures=3, last_error="HTTP 503 from langfuse",
        config={"url": "https://langfuse.example", "public_key": "pk-lf-1", "secret_key": "sk-lf-very-secret"},
    )


@pytest.fixture
def everything(org, other_org, key, other_key, call, sink, system_actor):
    """One of each thing the admin lists, so every column of every list is drawn."""
    budget_set(org=org, key=key, amount=Decimal("5"), period=Budget.Period.DAILY, actor=system_actor)
    org_token_create(org=org, name="ci", actor=system_actor)


def changelist(app: str, model: str) -> str:
    return reverse(f"admin:{app}_{model}_changelist")


def listed(response) -> list:
    return list(response.context["cl"].result_list)


@pytest.mark.parametrize(("app", "model"), ADMIN_PAGES)
def test_staff_can_open_every_list(admin_client, everything, app, model):
    assert admin_client.get(changelist(app, model)).status_code == 200


@pytest.mark.parametrize(("app", "model"), ADMIN_PAGES)
def test_people_who_are_not_staff_are_sent_to_the_admin_login(client, owner, app, model):
    client.force_login(owner)
    response = client.get(changelist(app, model))
    assert (response.status_code, response.url.split("?")[0]) == (302, reverse("admin:login"))


def test_the_admin_login_refuses_even_the_right_password_after_five_wrong_ones(client, django_user_model):
    django_user_model.objects.create_superuser(username="staff@example.com", password="pw-staff-123")
    login = reverse("admin:login")
    failures = [client.post(login, {"username": "staff@example.com", "password": f"guess-{n}"}).status_code
                for n in range(5)]

    refused = client.post(login, {"username": "staff@example.com", "password": "pw-staff-123"})

    assert failures == [200] * 5
    assert "Too many failed sign-in attempts" in refused.content.decode()
    assert client.get(changelist("keys", "organization")).status_code == 302


def test_the_admin_login_still_signs_staff_in(client, django_user_model):
    django_user_model.objects.create_superuser(username="staff@example.com", password="pw-staff-123")

    client.post(reverse("admin:login"), {"username": "staff@example.com", "password": "pw-staff-123"})

    assert client.get(changelist("keys", "organization")).status_code == 200


def test_staff_add_a_credit_grant_through_the_audited_service(admin_client, admin_user, org):
    response = admin_client.post(
        reverse("admin:billing_creditgrant_add"), {"org": org.pk, "amount": "3.00", "reason": "goodwill"}
    )
    assert response.status_code == 302
    event = AuditEvent.objects.get(org=org, action="credits.grant", actor_label="admin")
    assert (event.actor, event.data) == (admin_user, {"amount": "3.00", "reason": "goodwill"})


def test_a_credit_grant_cannot_be_edited_or_deleted(admin_client, org):
    grant = CreditGrant.objects.get(org=org)
    edited = admin_client.post(
        reverse("admin:billing_creditgrant_change", args=[grant.pk]), {"org": org.pk, "amount": "500", "reason": "x"}
    )
    deleted = admin_client.post(reverse("admin:billing_creditgrant_delete", args=[grant.pk]), {"post": "yes"})
    assert (edited.status_code, deleted.status_code) == (403, 403)
    assert CreditGrant.objects.get(pk=grant.pk).amount == Decimal("5.00")


def test_the_key_page_never_shows_the_secret_hash(admin_client, key_and_secret):
    key, secret = key_and_secret
    response = admin_client.get(reverse("admin:keys_virtualkey_change", args=[key.pk]))
    page = response.content.decode()
    assert response.status_code == 200
    assert (key.secret_hash in page, secret in page, "secret_hash" in page) == (False, False, False)


def test_staff_find_a_key_by_prefix(admin_client, key, other_key):
    response = admin_client.get(changelist("keys", "virtualkey"), {"q": key.prefix})
    assert listed(response) == [key]


def test_staff_find_keys_by_org_name(admin_client, key, other_key):
    response = admin_client.get(changelist("keys", "virtualkey"), {"q": "Other Inc"})
    assert listed(response) == [other_key]


def test_the_key_list_filters_revoked_keys(admin_client, key, other_key, system_actor):
    virtual_key_revoke(key=other_key, actor=system_actor)
    revoked = admin_client.get(changelist("keys", "virtualkey"), {"status": "revoked"})
    active = admin_client.get(changelist("keys", "virtualkey"), {"status": "active"})
    assert (listed(revoked), listed(active)) == ([other_key], [key])


def test_the_key_list_filters_expired_keys(admin_client, org, key, system_actor):
    expired, _ = virtual_key_create(
        org=org, name="old", actor=system_actor, expires=timezone.now() - timedelta(days=1)
    )
    response = admin_client.get(changelist("keys", "virtualkey"), {"status": "expired"})
    assert listed(response) == [expired]


def test_the_revoke_action_revokes_the_selected_keys_and_audits_it(admin_client, admin_user, org, key, other_key):
    response = admin_client.post(
        changelist("keys", "virtualkey"), {"action": "revoke_keys", "_selected_action": [key.pk]}
    )
    key.refresh_from_db()
    other_key.refresh_from_db()
    assert response.status_code == 302
    assert (key.revoked is not None, other_key.revoked) == (True, None)
    event = AuditEvent.objects.get(org=org, action="key.revoke")
    assert (event.actor, event.actor_label, event.target_id) == (admin_user, "admin", str(key.pk))


def unchanged_json_fields() -> dict:
    """The key form's JSON fields as a browser posts them, with the hidden initial values of fields with defaults."""
    return {"allowed_models": "[]", "initial-allowed_models": "[]", "metadata": "{}", "initial-metadata": "{}"}


def test_staff_edit_a_key_through_the_audited_service(admin_client, admin_user, org, key, team):
    response = admin_client.post(
        reverse("admin:keys_virtualkey_change", args=[key.pk]),
        {"name": "renamed", "team": team.pk, "rpm_limit": "30", "tpm_limit": "", "max_parallel": "", "expires": "",
         **unchanged_json_fields()},
    )
    key.refresh_from_db()
    assert (response.status_code, key.name, key.rpm_limit) == (302, "renamed", 30)
    event = AuditEvent.objects.get(org=org, action="key.update")
    assert (event.actor, event.data) == (admin_user, {"name": "renamed", "rpm_limit": "30"})


def test_a_key_cannot_move_to_another_orgs_team(admin_client, key, other_org, system_actor):
    their_team = team_create(org=other_org, name="theirs", actor=system_actor)
    response = admin_client.post(
        reverse("admin:keys_virtualkey_change", args=[key.pk]),
        {"name": key.name, "team": their_team.pk, **unchanged_json_fields()},
    )
    key.refresh_from_db()
    assert (response.status_code, key.team.name) == (200, "research")


def test_keys_are_neither_added_nor_deleted_in_the_admin(admin_client, key):
    added = admin_client.get(reverse("admin:keys_virtualkey_add"))
    deleted = admin_client.post(reverse("admin:keys_virtualkey_delete", args=[key.pk]), {"post": "yes"})
    assert (added.status_code, deleted.status_code) == (403, 403)
    assert VirtualKey.objects.filter(pk=key.pk).exists()


def test_the_token_revoke_action_revokes_and_audits_it(admin_client, admin_user, org, system_actor):
    token, _ = org_token_create(org=org, name="ci", actor=system_actor)
    admin_client.post(changelist("keys", "orgtoken"), {"action": "revoke_tokens", "_selected_action": [token.pk]})
    assert OrgToken.objects.get(pk=token.pk).revoked is not None
    event = AuditEvent.objects.get(org=org, action="token.revoke")
    assert (event.actor, event.target_id) == (admin_user, str(token.pk))


def test_staff_find_members_by_email_and_filter_by_role(admin_client, org, owner):
    by_email = admin_client.get(changelist("keys", "membership"), {"q": "owner@example.com"})
    owners = admin_client.get(changelist("keys", "membership"), {"role__exact": "owner"})
    owner_membership = Membership.objects.get(org=org, user=owner)
    assert (listed(by_email), listed(owners)) == ([owner_membership], [owner_membership])


def test_staff_change_a_role_through_the_audited_service(admin_client, admin_user, org, teammate):
    membership = Membership.objects.get(org=org, user=teammate)
    admin_client.post(reverse("admin:keys_membership_change", args=[membership.pk]), {"role": "admin"})
    membership.refresh_from_db()
    event = AuditEvent.objects.get(org=org, action="member.add", actor_label="admin")
    assert (membership.role, event.target_id) == ("admin", str(membership.pk))


def test_staff_add_a_team_through_the_audited_service(admin_client, admin_user, org):
    admin_client.post(reverse("admin:keys_team_add"), {"org": org.pk, "name": "support"})
    team = Team.objects.get(org=org, name="support")
    event = AuditEvent.objects.get(org=org, action="team.create")
    assert (event.actor, event.target_id) == (admin_user, str(team.pk))


def test_staff_delete_a_team_through_the_audited_service(admin_client, admin_user, org, team):
    admin_client.post(reverse("admin:keys_team_delete", args=[team.pk]), {"post": "yes"})
    assert not Team.objects.filter(pk=team.pk).exists()
    assert AuditEvent.objects.get(org=org, action="team.delete").actor == admin_user


def test_the_audit_trail_is_read_only(admin_client, org):
    event = AuditEvent.objects.filter(org=org).first()
    added = admin_client.get(reverse("admin:keys_auditevent_add"))
    deleted = admin_client.post(reverse("admin:keys_auditevent_delete", args=[event.pk]), {"post": "yes"})
    assert (added.status_code, deleted.status_code) == (403, 403)


def test_staff_filter_the_audit_trail_by_action(admin_client, org, key):
    response = admin_client.get(changelist("keys", "auditevent"), {"action": "key.create"})
    assert [event.target_id for event in listed(response)] == [str(key.pk)]


def test_staff_search_the_audit_trail_by_actor(admin_client, org, admin_user):
    credits_grant(org=org, amount=Decimal("1"), reason="x", actor=Actor.of_user(admin_user))
    response = admin_client.get(changelist("keys", "auditevent"), {"q": "admin"})
    assert [event.action for event in listed(response)] == ["credits.grant"]


def test_staff_set_a_budget_through_the_audited_service(admin_client, admin_user, org, key):
    response = admin_client.post(
        reverse("admin:billing_budget_add"),
        {"org": org.pk, "key": key.pk, "team": "", "amount": "7.50", "period": "weekly"},
    )
    budget = Budget.objects.get(key=key)
    assert (response.status_code, budget.scope, budget.amount, budget.period) == (302, "key", Decimal("7.5"), "weekly")
    event = AuditEvent.objects.get(org=org, action="budget.create")
    assert (event.actor, event.target_id) == (admin_user, str(budget.pk))


def test_staff_change_a_budget_through_the_audited_service(admin_client, admin_user, org, key, system_actor):
    budget = budget_set(org=org, key=key, amount=Decimal("5"), actor=system_actor)
    admin_client.post(reverse("admin:billing_budget_change", args=[budget.pk]), {"amount": "9", "period": "daily"})
    budget.refresh_from_db()
    assert (budget.amount, budget.period) == (Decimal("9"), "daily")
    assert AuditEvent.objects.get(org=org, action="budget.update").actor == admin_user


def test_a_budget_on_another_orgs_key_is_refused_in_the_admin(admin_client, org, other_key):
    response = admin_client.post(
        reverse("admin:billing_budget_add"),
        {"org": org.pk, "key": other_key.pk, "team": "", "amount": "7.50", "period": "none"},
    )
    assert response.status_code == 200
    assert "This key belongs to another organization." in response.content.decode()
    assert not Budget.objects.exists()


def test_a_negative_budget_is_refused_in_the_admin(admin_client, org):
    response = admin_client.post(
        reverse("admin:billing_budget_add"), {"org": org.pk, "key": "", "team": "", "amount": "-1", "period": "none"}
    )
    assert response.status_code == 200
    assert not Budget.objects.exists()


def test_staff_delete_a_budget_through_the_audited_service(admin_client, admin_user, org, key, system_actor):
    budget = budget_set(org=org, key=key, amount=Decimal("5"), actor=system_actor)
    admin_client.post(reverse("admin:billing_budget_delete", args=[budget.pk]), {"post": "yes"})
    assert not Budget.objects.exists()
    assert AuditEvent.objects.get(org=org, action="budget.delete").actor == admin_user


def test_staff_edit_catalog_prices(admin_client):
    model = CatalogModel.objects.get(name="gemini-2.5-flash")
    response = admin_client.post(
        reverse("admin:billing_catalogmodel_change", args=[model.pk]),
        {"name": model.name, "vendor": model.vendor, "input_price": "0.40", "cached_input_price": "0.04",
         "output_price": "3.00", "context_window": model.context_window,
         "max_output_tokens": model.max_output_tokens, "capabilities": "[\"tools\"]"},
    )
    model.refresh_from_db()
    assert (response.status_code, model.input_price, model.output_price) == (302, Decimal("0.40"), Decimal("3.00"))


def test_the_request_log_refuses_add_change_and_delete(admin_client, call):
    added = admin_client.get(reverse("admin:analytics_requestlog_add"))
    changed = admin_client.post(reverse("admin:analytics_requestlog_change", args=[call.pk]), {"status": "500"})
    deleted = admin_client.post(reverse("admin:analytics_requestlog_delete", args=[call.pk]), {"post": "yes"})
    assert (added.status_code, changed.status_code, deleted.status_code) == (403, 403, 403)
    assert RequestLog.objects.get(pk=call.pk).status == 200


def test_staff_can_read_one_logged_call(admin_client, call):
    response = admin_client.get(reverse("admin:analytics_requestlog_change", args=[call.pk]))
    assert response.status_code == 200
    assert "flash-mock" in response.content.decode()


@pytest.mark.parametrize("term_of", [lambda c: c.request_id, lambda c: c.run_id, lambda c: c.key_prefix],
                         ids=["request-id", "run-id", "key-prefix"])
def test_staff_find_a_call_by_request_run_or_key(admin_client, call, term_of):
    response = admin_client.get(changelist("analytics", "requestlog"), {"q": term_of(call)})
    assert listed(response) == [call]


@pytest.mark.parametrize(
    ("parameter", "value", "found"),
    [("status", "200", 1), ("status", "502", 0), ("cache", "miss", 1), ("cache", "hit", 0),
     ("model", "gemini-2.5-flash", 1), ("deployment", "flash-mock", 1), ("deployment", "other", 0)],
)
def test_staff_filter_the_request_log(admin_client, call, parameter, value, found):
    response = admin_client.get(changelist("analytics", "requestlog"), {parameter: value})
    assert len(listed(response)) == found


def test_the_sink_list_shows_its_health(admin_client, sink):
    page = admin_client.get(changelist("analytics", "exportsink")).content.decode()
    assert "HTTP 503 from langfuse" in page


def test_the_sink_page_hides_its_credentials(admin_client, sink):
    page = admin_client.get(reverse("admin:analytics_exportsink_change", args=[sink.pk])).content.decode()
    assert ("https://langfuse.example" in page, "sk-lf-very-secret" in page) == (True, False)


def test_staff_filter_sinks_by_type(admin_client, sink):
    langfuse = admin_client.get(changelist("analytics", "exportsink"), {"type__exact": "langfuse"})
    datadog = admin_client.get(changelist("analytics", "exportsink"), {"type__exact": "datadog"})
    assert (listed(langfuse), listed(datadog)) == ([sink], [])
