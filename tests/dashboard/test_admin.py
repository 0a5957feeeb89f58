"""The support staff's page of an org (dashboard.admin): its tenants' records with its credits and
recent calls, found by member or key, changed and granted credits through the audited services."""

from datetime import UTC, timedelta
from decimal import Decimal

import pytest
from django.urls import reverse
from django.utils import timezone

from analytics.models import RequestLog
from billing.models import Budget, CreditGrant
from billing.services import budget_set
from dashboard.selectors import credit_balance
from keys.models import AuditEvent, VirtualKey
from keys.services import virtual_key_create

pytestmark = pytest.mark.django_db


@pytest.fixture
def staff(django_user_model):
    """A superuser of the support site, a member of no org."""
    return django_user_model.objects.create_superuser(username="staff", email="staff@example.com",
                                                      password="pw-staff-123")


@pytest.fixture
def staff_client(client, staff):
    client.force_login(staff)
    return client


@pytest.fixture
def key_and_secret(org, system_actor) -> tuple[VirtualKey, str]:
    return virtual_key_create(org=org, name="agent", actor=system_actor)


@pytest.fixture
def call(key, make_log) -> RequestLog:
    return make_log(key, request_id="req-admin-1")


@pytest.fixture
def budget(org, key, system_actor) -> Budget:
    return budget_set(org=org, key=key, amount=Decimal("5"), period=Budget.Period.DAILY, actor=system_actor)


def changelist(app: str, model: str) -> str:
    return reverse(f"admin:{app}_{model}_changelist")


def listed(response) -> list:
    return list(response.context["cl"].result_list)


def test_the_org_page_shows_members_keys_budgets_grants_and_recent_calls(staff_client, org, key, call, budget):
    response = staff_client.get(reverse("admin:keys_organization_change", args=[org.pk]))
    page = response.content.decode()
    assert response.status_code == 200
    assert "mate@example.com" in page
    assert key.prefix in page
    assert "sign-up credits" in page
    assert "req-admin-1" in page
    assert "Grant credits" in page


def test_the_org_page_never_shows_a_secret_hash(staff_client, org, key_and_secret):
    key, secret = key_and_secret
    page = staff_client.get(reverse("admin:keys_organization_change", args=[org.pk])).content.decode()
    assert key.secret_hash not in page
    assert secret not in page


def test_the_org_page_lists_at_most_twenty_recent_calls(staff_client, org, key):
    RequestLog.objects.bulk_create(
        RequestLog(request_id=f"req-{n:03d}", org=org, key=key, key_prefix=key.prefix, model="m", status=200,
                   created=timezone.now() - timedelta(minutes=n))
        for n in range(25)
    )
    page = staff_client.get(reverse("admin:keys_organization_change", args=[org.pk])).content.decode()
    assert ("req-019" in page, "req-020" in page) == (True, False)


def test_the_org_list_shows_credit_balance_and_key_count(staff_client, org, key, other_org):
    response = staff_client.get(changelist("keys", "organization"), {"q": org.slug})
    page = response.content.decode()
    assert listed(response) == [org]
    assert "$5.00" in page
    assert listed(response)[0].key_count == 1


def test_staff_find_an_org_by_a_members_email(staff_client, org, other_org):
    response = staff_client.get(changelist("keys", "organization"), {"q": "mate@example.com"})
    assert listed(response) == [org]


def test_staff_find_an_org_by_a_key_prefix(staff_client, org, key, other_key):
    response = staff_client.get(changelist("keys", "organization"), {"q": key.prefix})
    assert listed(response) == [org]


def test_an_org_with_several_matching_members_is_listed_once(staff_client, org, other_org):
    response = staff_client.get(changelist("keys", "organization"), {"q": "example.com"})
    assert sorted(o.name for o in listed(response)) == ["Acme", "Other Inc"]


def test_staff_change_org_settings_through_the_audited_service(staff_client, staff, org):
    response = staff_client.post(
        reverse("admin:keys_organization_change", args=[org.pk]),
        {"cache_enabled": "on", **empty_inlines("teams", "memberships", "keys", "budgets", "credit_grants")},
    )
    org.refresh_from_db()
    assert (response.status_code, org.cache_enabled) == (302, True)
    event = AuditEvent.objects.get(org=org, action="org.settings")
    assert (event.actor, event.actor_label, event.data) == (staff, "staff", {"cache_enabled": True})


def empty_inlines(*prefixes: str) -> dict:
    """The management forms the org page posts for its read-only inlines."""
    return {f"{prefix}-{count}": "0" for prefix in prefixes for count in ("TOTAL_FORMS", "INITIAL_FORMS")}


def test_staff_add_an_org_with_its_sign_up_credits(staff_client, staff):
    response = staff_client.post(reverse("admin:keys_organization_add"), {"name": "Walk-in"})
    org = AuditEvent.objects.get(action="org.create", actor_label="staff").org
    assert (response.status_code, org.name, credit_balance(org=org)) == (302, "Walk-in", Decimal("5.00"))


def test_the_grant_credits_page_opens(staff_client, org):
    response = staff_client.get(reverse("admin:keys_organization_grant_credits", args=[org.pk]))
    assert response.status_code == 200
    assert "Current balance: $5.00" in response.content.decode()


def test_staff_grant_credits_under_their_own_name(staff_client, staff, org):
    response = staff_client.post(
        reverse("admin:keys_organization_grant_credits", args=[org.pk]), {"amount": "20.00", "reason": "pilot"}
    )
    assert response.status_code == 302
    grant = CreditGrant.objects.get(org=org, reason="pilot")
    assert (grant.amount, grant.granted_by, grant.granted_by_label) == (Decimal("20.00"), staff, "staff")
    assert credit_balance(org=org) == Decimal("25.00")


def test_a_staff_grant_is_audited_with_the_staff_user(staff_client, staff, org):
    staff_client.post(
        reverse("admin:keys_organization_grant_credits", args=[org.pk]), {"amount": "20.00", "reason": "pilot"}
    )
    event = AuditEvent.objects.get(org=org, action="credits.grant", actor_label="staff")
    assert (event.actor, event.data) == (staff, {"amount": "20.00", "reason": "pilot"})


@pytest.mark.parametrize(
    "form",
    [{"amount": "20.00"}, {"amount": "0", "reason": "nothing"}, {"amount": "twenty", "reason": "typo"}],
    ids=["no-reason", "zero", "not-a-number"],
)
def test_a_bad_grant_form_grants_nothing(staff_client, org, form):
    response = staff_client.post(reverse("admin:keys_organization_grant_credits", args=[org.pk]), form)
    assert response.status_code == 200
    assert credit_balance(org=org) == Decimal("5.00")


def test_granting_credits_to_a_missing_org_is_a_404(staff_client):
    response = staff_client.get(reverse("admin:keys_organization_grant_credits", args=[987654321]))
    assert response.status_code == 404


def test_staff_without_the_grant_permission_may_not_grant(client, django_user_model, org):
    clerk = django_user_model.objects.create_user(username="clerk", password="pw-clerk-123", is_staff=True)
    client.force_login(clerk)
    response = client.post(
        reverse("admin:keys_organization_grant_credits", args=[org.pk]), {"amount": "20", "reason": "x"}
    )
    assert response.status_code == 403
    assert credit_balance(org=org) == Decimal("5.00")


@pytest.mark.parametrize("pasted", ["sk-nemo-{prefix}", "sk-nemo-{prefix}…", " sk-nemo-{prefix}... ", "{secret}"])
def test_staff_find_a_key_pasted_as_the_dashboard_shows_it(staff_client, key_and_secret, other_key, pasted):
    key, secret = key_and_secret

    response = staff_client.get(changelist("keys", "virtualkey"), {"q": pasted.format(prefix=key.prefix,
                                                                                       secret=secret)})

    assert listed(response) == [key]


def test_staff_find_a_keys_calls_and_org_by_the_key_as_shown(staff_client, org, key, call, other_org):
    shown = f"sk-nemo-{key.prefix}…"

    calls = staff_client.get(changelist("analytics", "requestlog"), {"q": shown})
    orgs = staff_client.get(changelist("keys", "organization"), {"q": shown})

    assert listed(calls) == [call] and listed(orgs) == [org]


def test_the_request_log_list_shows_status_model_cost_and_latency_in_one_format(staff_client, key, make_log):
    row = make_log(key, status=402, model="gpt-9", cost=Decimal("0.025055"), latency_ms=812)

    page = staff_client.get(changelist("analytics", "requestlog")).content.decode()

    assert "$0.025055" in page and "812 ms" in page and "gpt-9" in page and "402" in page
    assert row.created.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC") in page
    assert "run_id" not in page.split("<thead>")[1].split("</thead>")[0]


def test_an_orgs_recent_calls_show_status_and_cost_first(staff_client, org, key, make_log):
    make_log(key, status=200, cost=Decimal("0.00111"), latency_ms=420)

    page = staff_client.get(reverse("admin:keys_organization_change", args=[org.pk])).content.decode()

    header = page.split("recent-calls")[1].split("</thead>")[0]
    assert header.index("cost") < header.index("model") < header.index("request")
    assert "$0.00111" in page and "420 ms" in page


def test_the_org_page_shows_its_grants_in_the_one_money_format(staff_client, org):
    page = staff_client.get(reverse("admin:keys_organization_change", args=[org.pk])).content.decode()

    assert "$5.00" in page and "5.000000</td>" not in page
