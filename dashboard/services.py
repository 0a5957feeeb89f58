"""The dashboard's writes that span more than one service, each in one transaction.

Sign-up creates a user and their org together; issuing a key sets its budget in the same
transaction, so a failure never leaves a key without the budget its owner asked for.
"""

from datetime import datetime
from decimal import Decimal

from django.contrib.auth import get_user_model
from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction

from billing.models import Budget
from billing.selectors import budgets_for_key
from billing.services import budget_delete, budget_set, organization_create_with_credits
from keys.audit import Actor
from keys.models import Membership, Organization, Team, VirtualKey
from keys.services import (
    invitation_accept,
    team_create,
    team_update,
    virtual_key_create,
    virtual_key_update,
)


def account_create(*, email: str, password: str) -> AbstractBaseUser:
    """A user whose username is their email."""
    return get_user_model().objects.create_user(username=email, email=email, password=password)


@transaction.atomic
def account_signup(*, email: str, password: str, org_name: str) -> tuple[AbstractBaseUser, Organization]:
    """A new user owning a new org with the sign-up credits."""
    user = account_create(email=email, password=password)
    org = organization_create_with_credits(name=org_name, owner=user, actor=Actor.of_user(user))
    return user, org


def account_join(*, email: str, password: str, token: str) -> tuple[AbstractBaseUser, Membership] | None:
    """A new user joining the org of an invitation; None (and no user) if the link is not valid."""
    with transaction.atomic():
        user = account_create(email=email, password=password)
        membership = invitation_accept(token=token, user=user)
        if membership is None:
            transaction.set_rollback(True)
            return None
    return user, membership


def _budget_apply(*, org: Organization, actor: Actor, current: Budget | None, amount: Decimal | None,
                  period: str, key: VirtualKey | None = None, team: Team | None = None) -> None:
    if amount is not None:
        budget_set(org=org, actor=actor, amount=amount, period=period, key=key, team=team)
    elif current is not None:
        budget_delete(budget=current, actor=actor)


@transaction.atomic
def key_issue(
    *,
    org: Organization,
    actor: Actor,
    name: str,
    team: Team | None,
    allowed_models: list[str],
    rpm_limit: int | None,
    tpm_limit: int | None,
    max_parallel: int | None,
    expires: datetime | None,
    budget: Decimal | None,
    budget_period: str,
    default_max_tokens: int | None = None,
    run_budget: Decimal | None = None,
    run_max_steps: int | None = None,
    loop_limit: int = 0,
) -> tuple[VirtualKey, str]:
    """A new key with its budget; returns the secret, which is never shown again."""
    key, secret = virtual_key_create(
        org=org, actor=actor, name=name, team=team, allowed_models=allowed_models,
        rpm_limit=rpm_limit, tpm_limit=tpm_limit, max_parallel=max_parallel, expires=expires,
        default_max_tokens=default_max_tokens, run_budget=run_budget, run_max_steps=run_max_steps,
        loop_limit=loop_limit,
    )
    _budget_apply(org=org, actor=actor, current=None, amount=budget, period=budget_period, key=key)
    return key, secret


@transaction.atomic
def key_change(
    *,
    key: VirtualKey,
    actor: Actor,
    name: str,
    team: Team | None,
    allowed_models: list[str],
    rpm_limit: int | None,
    tpm_limit: int | None,
    max_parallel: int | None,
    expires: datetime | None,
    budget: Decimal | None,
    budget_period: str,
    default_max_tokens: int | None = None,
    run_budget: Decimal | None = None,
    run_max_steps: int | None = None,
    loop_limit: int = 0,
) -> VirtualKey:
    """New limits and budget for a key; an empty budget removes the key's budget."""
    key = virtual_key_update(
        key=key, actor=actor, name=name, team=team, allowed_models=allowed_models,
        rpm_limit=rpm_limit, tpm_limit=tpm_limit, max_parallel=max_parallel, expires=expires,
        default_max_tokens=default_max_tokens, run_budget=run_budget, run_max_steps=run_max_steps,
        loop_limit=loop_limit,
    )
    _budget_apply(org=key.org, actor=actor, current=budgets_for_key(key=key).get("key"),
                  amount=budget, period=budget_period, key=key)
    return key


@transaction.atomic
def team_save(
    *,
    org: Organization,
    actor: Actor,
    name: str,
    budget: Decimal | None,
    budget_period: str,
    team: Team | None = None,
    current_budget: Budget | None = None,
) -> Team:
    """Creates a team (or renames ``team``) and sets its budget; an empty budget removes it."""
    if team is None:
        team = team_create(org=org, name=name, actor=actor)
    elif team.name != name:
        team = team_update(team=team, name=name, actor=actor)
    _budget_apply(org=org, actor=actor, current=current_budget, amount=budget, period=budget_period, team=team)
    return team


@transaction.atomic
def org_budget_save(*, org: Organization, actor: Actor, amount: Decimal | None, period: str,
                    current: Budget | None) -> None:
    """Sets the org's own budget; an empty amount removes it."""
    _budget_apply(org=org, actor=actor, current=current, amount=amount, period=period)
