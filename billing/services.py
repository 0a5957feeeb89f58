"""Writes to budgets and credits, each with its audit event, and the opening of an org with its
sign-up credits (keys creates the org; the credits are billing's)."""

from decimal import Decimal

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction

from billing.models import Budget, CreditGrant
from keys.audit import Actor, audit_record
from keys.invalidation import key_changed
from keys.models import Organization, Team, VirtualKey
from keys.services import organization_create


@transaction.atomic
def credits_grant(*, org: Organization, amount: Decimal, reason: str, actor: Actor) -> CreditGrant:
    grant = CreditGrant.objects.create(
        org=org, amount=Decimal(amount), reason=reason, granted_by=actor.user, granted_by_label=actor.label
    )
    audit_record(org=org, actor=actor, action="credits.grant", target=grant,
                 data={"amount": str(grant.amount), "reason": reason})
    transaction.on_commit(lambda: key_changed(org_id=org.pk))
    return grant


@transaction.atomic
def organization_create_with_credits(
    *,
    name: str,
    actor: Actor,
    owner: AbstractBaseUser | None = None,
    credits: Decimal | None = None,
) -> Organization:
    """A new org (keys.services.organization_create) with its sign-up credits ($5.00 unless told
    otherwise): how sign-up, createorg and the support admin open an org."""
    org = organization_create(name=name, owner=owner, actor=actor)
    amount = Decimal(settings.NEMO_SIGNUP_CREDITS) if credits is None else credits
    if amount:
        credits_grant(org=org, amount=amount, reason="sign-up credits", actor=actor)
    return org


@transaction.atomic
def budget_set(
    *,
    org: Organization,
    actor: Actor,
    amount: Decimal,
    period: str = Budget.Period.NONE,
    key: VirtualKey | None = None,
    team: Team | None = None,
) -> Budget:
    """Sets the budget of a key, a team, or (with neither) the org itself."""
    amount = Decimal(amount)
    # is_finite first: comparing NaN with < raises InvalidOperation, not the ValueError callers expect.
    if not amount.is_finite():
        raise ValueError("a budget must be a finite amount")
    if amount < 0:
        raise ValueError("a budget cannot be negative")
    if period not in Budget.Period.values:
        raise ValueError(f"unknown budget period {period!r}")
    if key is not None and key.org_id != org.pk or team is not None and team.org_id != org.pk:
        raise ValueError("the budget's owner belongs to another organization")
    if key is not None:
        lookup = {"scope": Budget.Scope.KEY, "key": key}
    elif team is not None:
        lookup = {"scope": Budget.Scope.TEAM, "team": team}
    else:
        lookup = {"scope": Budget.Scope.ORG}
    budget, created = Budget.objects.update_or_create(
        org=org, **lookup, defaults={"amount": amount, "period": period}
    )
    audit_record(org=org, actor=actor, action="budget.create" if created else "budget.update", target=budget,
                 data={"scope": budget.scope, "amount": str(budget.amount), "period": period})
    transaction.on_commit(lambda: key_changed(org_id=org.pk))
    return budget


@transaction.atomic
def budget_delete(*, budget: Budget, actor: Actor) -> None:
    audit_record(org=budget.org, actor=actor, action="budget.delete", target=budget,
                 data={"scope": budget.scope, "amount": str(budget.amount)})
    org_id = budget.org_id
    budget.delete()
    transaction.on_commit(lambda: key_changed(org_id=org_id))
