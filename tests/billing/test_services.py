"""Writes to budgets and credits: validation, and the audit row each one leaves."""

from decimal import Decimal

import pytest

from billing.models import Budget, CreditGrant
from billing.selectors import credits_granted
from billing.services import budget_delete, budget_set, credits_grant, organization_create_with_credits
from keys.audit import Actor
from keys.models import AuditEvent, Membership
from keys.services import team_create, virtual_key_create

pytestmark = pytest.mark.django_db


@pytest.fixture
def actor(owner) -> Actor:
    return Actor.of_user(owner)


@pytest.fixture
def key(org, system_actor):
    key, _ = virtual_key_create(org=org, name="agent", actor=system_actor)
    return key


def audit_row(org, action: str) -> tuple:
    """The one audit row of this action in the org: (actor, actor label, target type, target id)."""
    return AuditEvent.objects.filter(org=org, action=action).values_list(
        "actor", "actor_label", "target_type", "target_id"
    ).get()


def test_credits_grant_adds_to_the_orgs_credits(org, actor):
    credits_grant(org=org, amount=Decimal("20.00"), reason="pilot", actor=actor)
    assert credits_granted(org_id=org.pk) == Decimal("25.00")


def test_a_negative_grant_corrects_the_orgs_credits(org, actor):
    credits_grant(org=org, amount=Decimal("-1.50"), reason="double grant", actor=actor)
    assert credits_granted(org_id=org.pk) == Decimal("3.50")


def test_a_new_org_gets_five_dollars_of_sign_up_credits(actor):
    org = organization_create_with_credits(name="Fresh", actor=actor)
    assert list(CreditGrant.objects.filter(org=org).values_list("amount", "reason")) == [
        (Decimal("5.00"), "sign-up credits")
    ]


def test_a_new_org_may_start_with_other_credits(actor):
    org = organization_create_with_credits(name="Fresh", actor=actor, credits=Decimal("12.50"))
    assert credits_granted(org_id=org.pk) == Decimal("12.50")


def test_a_new_org_with_zero_credits_gets_no_grant(actor):
    org = organization_create_with_credits(name="Fresh", actor=actor, credits=Decimal("0"))
    assert CreditGrant.objects.filter(org=org).count() == 0


def test_a_new_org_with_credits_has_its_owner_and_audits_the_sign_up_grant(owner, actor):
    org = organization_create_with_credits(name="Fresh", owner=owner, actor=actor)
    grant = CreditGrant.objects.get(org=org)
    assert Membership.objects.get(org=org, user=owner).role == Membership.Role.OWNER
    assert audit_row(org, "credits.grant") == (owner.pk, "owner@example.com", "CreditGrant", str(grant.pk))


def test_credits_grant_records_who_granted(org, owner, actor):
    grant = credits_grant(org=org, amount=Decimal("20.00"), reason="pilot", actor=actor)
    assert (grant.granted_by, grant.granted_by_label) == (owner, "owner@example.com")


def test_credits_grant_is_audited(org, owner, actor):
    grant = credits_grant(org=org, amount=Decimal("20.00"), reason="pilot", actor=actor)
    event = AuditEvent.objects.get(org=org, action="credits.grant", target_id=str(grant.pk))
    assert (event.actor_id, event.actor_label, event.target_type, event.data) == (
        owner.pk, "owner@example.com", "CreditGrant", {"amount": "20.00", "reason": "pilot"}
    )


def test_budget_set_without_owner_sets_the_org_budget(org, actor):
    budget = budget_set(org=org, amount=Decimal("100"), period=Budget.Period.MONTHLY, actor=actor)
    assert (budget.scope, budget.key, budget.team, budget.period) == ("org", None, None, "monthly")


def test_budget_set_on_a_key_sets_the_key_budget(org, key, actor):
    budget = budget_set(org=org, key=key, amount=Decimal("5"), actor=actor)
    assert (budget.scope, budget.key, budget.period) == ("key", key, "none")


def test_budget_set_on_a_team_sets_the_team_budget(org, team, actor):
    budget = budget_set(org=org, team=team, amount=Decimal("5"), period=Budget.Period.WEEKLY, actor=actor)
    assert (budget.scope, budget.team, budget.period) == ("team", team, "weekly")


def test_setting_a_budget_again_updates_it_in_place(org, key, actor):
    first = budget_set(org=org, key=key, amount=Decimal("5"), actor=actor)
    second = budget_set(org=org, key=key, amount=Decimal("7.25"), period=Budget.Period.DAILY, actor=actor)
    assert second.pk == first.pk
    assert list(Budget.objects.filter(key=key).values_list("amount", "period")) == [(Decimal("7.25"), "daily")]


def test_a_zero_budget_is_allowed(org, key, actor):
    assert budget_set(org=org, key=key, amount=Decimal("0"), actor=actor).amount == Decimal("0")


def test_budget_set_create_is_audited(org, owner, key, actor):
    budget = budget_set(org=org, key=key, amount=Decimal("5"), actor=actor)
    assert audit_row(org, "budget.create") == (owner.pk, "owner@example.com", "Budget", str(budget.pk))


def test_budget_set_update_is_audited(org, owner, key, actor):
    budget = budget_set(org=org, key=key, amount=Decimal("5"), actor=actor)
    budget_set(org=org, key=key, amount=Decimal("6"), actor=actor)
    assert audit_row(org, "budget.update") == (owner.pk, "owner@example.com", "Budget", str(budget.pk))
    assert AuditEvent.objects.get(org=org, action="budget.update").data == {
        "scope": "key", "amount": "6", "period": "none"
    }


def test_budget_delete_removes_it_and_is_audited(org, owner, key, actor):
    budget = budget_set(org=org, key=key, amount=Decimal("5"), actor=actor)
    budget_id = budget.pk
    budget_delete(budget=budget, actor=actor)
    assert not Budget.objects.filter(pk=budget_id).exists()
    assert audit_row(org, "budget.delete") == (owner.pk, "owner@example.com", "Budget", str(budget_id))


def test_a_negative_budget_is_refused(org, key, actor):
    with pytest.raises(ValueError, match="cannot be negative"):
        budget_set(org=org, key=key, amount=Decimal("-0.01"), actor=actor)


@pytest.mark.parametrize("amount", [Decimal("NaN"), Decimal("Infinity"), Decimal("-Infinity")])
def test_a_budget_that_is_not_a_finite_amount_is_refused(org, key, actor, amount):
    with pytest.raises(ValueError, match="finite"):
        budget_set(org=org, key=key, amount=amount, actor=actor)


def test_an_unknown_budget_period_is_refused(org, key, actor):
    with pytest.raises(ValueError, match="unknown budget period 'hourly'"):
        budget_set(org=org, key=key, amount=Decimal("5"), period="hourly", actor=actor)


def test_a_budget_on_another_orgs_key_is_refused(org, other_org, actor, system_actor):
    their_key, _ = virtual_key_create(org=other_org, name="theirs", actor=system_actor)
    with pytest.raises(ValueError, match="another organization"):
        budget_set(org=org, key=their_key, amount=Decimal("5"), actor=actor)


def test_a_budget_on_another_orgs_team_is_refused(org, other_org, actor, system_actor):
    their_team = team_create(org=other_org, name="theirs", actor=system_actor)
    with pytest.raises(ValueError, match="another organization"):
        budget_set(org=org, team=their_team, amount=Decimal("5"), actor=actor)


def test_a_refused_budget_leaves_nothing_behind(org, key, actor):
    with pytest.raises(ValueError):
        budget_set(org=org, key=key, amount=Decimal("-1"), actor=actor)
    assert (Budget.objects.count(), AuditEvent.objects.filter(action__startswith="budget.").count()) == (0, 0)


def test_credit_grants_are_kept_as_a_ledger(org, actor):
    credits_grant(org=org, amount=Decimal("1"), reason="one", actor=actor)
    credits_grant(org=org, amount=Decimal("2"), reason="two", actor=actor)
    assert sorted(CreditGrant.objects.filter(org=org).values_list("reason", flat=True)) == [
        "one", "sign-up credits", "two"
    ]
