"""Writes to tenants and keys. Each one records an audit event in the same transaction."""

import secrets as stdlib_secrets
from collections.abc import Iterable
from datetime import datetime
from decimal import Decimal

from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction
from django.utils import timezone
from django.utils.text import slugify

from keys import secrets
from keys.audit import Actor, audit_record
from keys.invalidation import key_changed
from keys.models import Invitation, Membership, Organization, OrgToken, Team, VirtualKey


def _unique_slug(name: str) -> str:
    base = slugify(name)[:60] or "org"
    slug = base
    while Organization.objects.filter(slug=slug).exists():
        slug = f"{base}-{stdlib_secrets.token_hex(3)}"
    return slug


@transaction.atomic
def organization_create(*, name: str, actor: Actor, owner: AbstractBaseUser | None = None) -> Organization:
    """A new org, without credits: billing.services.organization_create_with_credits also grants
    the sign-up credits, which are billing's."""
    org = Organization.objects.create(name=name, slug=_unique_slug(name))
    audit_record(org=org, actor=actor, action="org.create", target=org, data={"name": name})
    if owner is not None:
        membership_add(org=org, user=owner, role=Membership.Role.OWNER, actor=actor)
    return org


@transaction.atomic
def organization_settings_update(
    *, org: Organization, actor: Actor, cache_enabled: bool | None = None, store_prompts: bool | None = None,
    default_max_tokens: int | None = None,
) -> Organization:
    changes = {}
    if default_max_tokens is not None:
        changes["default_max_tokens"] = default_max_tokens
    if cache_enabled is not None:
        changes["cache_enabled"] = cache_enabled
    if store_prompts is not None:
        changes["store_prompts"] = store_prompts
    for field, value in changes.items():
        setattr(org, field, value)
    org.save(update_fields=list(changes) or None)
    audit_record(org=org, actor=actor, action="org.settings", target=org, data=changes)
    transaction.on_commit(lambda: key_changed(org_id=org.pk))
    return org


@transaction.atomic
def membership_add(*, org: Organization, user: AbstractBaseUser, role: str, actor: Actor) -> Membership:
    membership, _ = Membership.objects.update_or_create(org=org, user=user, defaults={"role": role})
    audit_record(org=org, actor=actor, action="member.add", target=membership,
                 data={"user": user.get_username(), "role": role})
    return membership


def _refuse_to_lose_the_last_owner(membership: Membership, doing: str) -> None:
    """Raises if ``membership`` is its org's only owner: an org without an owner can no longer
    manage its members. The org row is locked first so that two owners demoting each other at the
    same time cannot both pass the check."""
    Organization.objects.select_for_update().filter(pk=membership.org_id).first()
    membership.refresh_from_db(fields=["role"])
    if membership.role != Membership.Role.OWNER:
        return
    other_owners = Membership.objects.filter(org_id=membership.org_id, role=Membership.Role.OWNER)
    if not other_owners.exclude(pk=membership.pk).exists():
        raise ValueError(f"Cannot {doing} the organization's last owner; make someone else owner first.")


@transaction.atomic
def membership_change_role(*, membership: Membership, role: str, actor: Actor) -> Membership:
    if role not in Membership.Role.values:
        raise ValueError(f"Unknown role {role!r}; choose one of {', '.join(Membership.Role.values)}.")
    if role != Membership.Role.OWNER:
        _refuse_to_lose_the_last_owner(membership, "demote")
    previous = membership.role
    membership.role = role
    membership.save(update_fields=["role"])
    audit_record(org=membership.org, actor=actor, action="member.role", target=membership,
                 data={"user": membership.user.get_username(), "from": previous, "role": role})
    return membership


@transaction.atomic
def membership_remove(*, membership: Membership, actor: Actor) -> None:
    _refuse_to_lose_the_last_owner(membership, "remove")
    audit_record(org=membership.org, actor=actor, action="member.remove", target=membership,
                 data={"user": membership.user.get_username(), "role": membership.role})
    membership.delete()


@transaction.atomic
def invitation_create(*, org: Organization, email: str, role: str, actor: Actor) -> tuple[Invitation, str]:
    """An invitation link token, shown once; only its hash is stored."""
    token = stdlib_secrets.token_urlsafe(24)
    invitation = Invitation.objects.create(
        org=org, email=email, role=role, token_hash=secrets.hash_token(token), invited_by=actor.user
    )
    audit_record(org=org, actor=actor, action="member.invite", target=invitation, data={"email": email, "role": role})
    return invitation, token


@transaction.atomic
def invitation_accept(*, token: str, user: AbstractBaseUser) -> Membership | None:
    """Claims the invitation with a conditional UPDATE so it can be used only once."""
    token_hash = secrets.hash_token(token)
    claimed = Invitation.objects.filter(token_hash=token_hash, accepted__isnull=True).update(accepted=timezone.now())
    if not claimed:
        return None
    invitation = Invitation.objects.select_related("org").get(token_hash=token_hash)
    return membership_add(org=invitation.org, user=user, role=invitation.role, actor=Actor.of_user(user))


@transaction.atomic
def team_create(*, org: Organization, name: str, actor: Actor) -> Team:
    team = Team.objects.create(org=org, name=name)
    audit_record(org=org, actor=actor, action="team.create", target=team, data={"name": name})
    return team


@transaction.atomic
def team_update(*, team: Team, name: str, actor: Actor) -> Team:
    team.name = name
    team.save(update_fields=["name"])
    audit_record(org=team.org, actor=actor, action="team.update", target=team, data={"name": name})
    return team


@transaction.atomic
def team_delete(*, team: Team, actor: Actor) -> None:
    audit_record(org=team.org, actor=actor, action="team.delete", target=team, data={"name": team.name})
    org_id = team.org_id
    team.delete()
    transaction.on_commit(lambda: key_changed(org_id=org_id))


@transaction.atomic
def virtual_key_create(
    *,
    org: Organization,
    name: str,
    actor: Actor,
    team: Team | None = None,
    allowed_models: Iterable[str] = (),
    rpm_limit: int | None = None,
    tpm_limit: int | None = None,
    max_parallel: int | None = None,
    default_max_tokens: int | None = None,
    run_budget: Decimal | None = None,
    run_max_steps: int | None = None,
    loop_limit: int = 0,
    expires: datetime | None = None,
    metadata: dict | None = None,
) -> tuple[VirtualKey, str]:
    """A new key and its secret. The secret is returned here and never again."""
    if team is not None and team.org_id != org.pk:
        raise ValueError("the team belongs to another organization")
    secret, prefix = secrets.generate(secrets.KEY_SCHEME)
    key = VirtualKey.objects.create(
        org=org,
        team=team,
        name=name,
        prefix=prefix,
        secret_hash=secrets.hash_secret(secret),
        allowed_models=list(allowed_models),
        rpm_limit=rpm_limit,
        tpm_limit=tpm_limit,
        max_parallel=max_parallel,
        default_max_tokens=default_max_tokens,
        run_budget=run_budget,
        run_max_steps=run_max_steps,
        loop_limit=loop_limit,
        expires=expires,
        metadata=metadata or {},
        created_by=actor.user,
    )
    audit_record(org=org, actor=actor, action="key.create", target=key, data={"name": name, "prefix": prefix})
    # Workers remember prefixes that had no key for a while: this one has one now.
    transaction.on_commit(lambda: key_changed(prefix=prefix))
    return key, secret


KEY_EDITABLE_FIELDS = (
    "name", "team", "allowed_models", "rpm_limit", "tpm_limit", "max_parallel", "default_max_tokens", "run_budget",
    "run_max_steps", "loop_limit", "expires", "metadata",
)


@transaction.atomic
def virtual_key_update(*, key: VirtualKey, actor: Actor, **changes) -> VirtualKey:
    unknown = set(changes) - set(KEY_EDITABLE_FIELDS)
    if unknown:
        raise ValueError(f"not editable: {', '.join(sorted(unknown))}")
    team = changes.get("team")
    if team is not None and team.org_id != key.org_id:
        raise ValueError("the team belongs to another organization")
    for field, value in changes.items():
        setattr(key, field, value)
    key.save(update_fields=list(changes) or None)
    audit_record(org=key.org, actor=actor, action="key.update", target=key,
                 data={f: str(v) for f, v in changes.items()})
    prefix = key.prefix
    transaction.on_commit(lambda: key_changed(prefix=prefix))
    return key


@transaction.atomic
def virtual_key_revoke(*, key: VirtualKey, actor: Actor) -> VirtualKey:
    if key.revoked is None:
        key.revoked = timezone.now()
        key.save(update_fields=["revoked"])
        audit_record(org=key.org, actor=actor, action="key.revoke", target=key, data={"prefix": key.prefix})
    prefix = key.prefix
    transaction.on_commit(lambda: key_changed(prefix=prefix))
    return key


@transaction.atomic
def virtual_key_rotate(*, key: VirtualKey, actor: Actor) -> tuple[VirtualKey, str]:
    """A new secret for the same key (same budgets, limits and history); the old one stops working."""
    old_prefix = key.prefix
    secret, prefix = secrets.generate(secrets.KEY_SCHEME)
    key.prefix = prefix
    key.secret_hash = secrets.hash_secret(secret)
    key.save(update_fields=["prefix", "secret_hash"])
    audit_record(org=key.org, actor=actor, action="key.rotate", target=key,
                 data={"old_prefix": old_prefix, "prefix": prefix})
    transaction.on_commit(lambda: key_changed(prefix=old_prefix))
    transaction.on_commit(lambda: key_changed(prefix=prefix))
    return key, secret


@transaction.atomic
def org_token_create(*, org: Organization, name: str, actor: Actor) -> tuple[OrgToken, str]:
    secret, prefix = secrets.generate(secrets.TOKEN_SCHEME)
    token = OrgToken.objects.create(org=org, name=name, prefix=prefix, secret_hash=secrets.hash_secret(secret))
    audit_record(org=org, actor=actor, action="token.create", target=token, data={"name": name, "prefix": prefix})
    return token, secret


@transaction.atomic
def org_token_revoke(*, token: OrgToken, actor: Actor) -> OrgToken:
    # Revoking twice keeps the first time: it is when the token stopped working.
    if token.revoked is None:
        token.revoked = timezone.now()
        token.save(update_fields=["revoked"])
        audit_record(org=token.org, actor=actor, action="token.revoke", target=token, data={"prefix": token.prefix})
    return token
