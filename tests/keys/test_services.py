"""Writes to tenants and keys: what they do, and the audit row each one leaves."""

import pytest

from billing.models import CreditGrant
from keys import invalidation
from keys.audit import Actor
from keys.models import AuditEvent, Membership, Team
from keys.services import (
    invitation_accept,
    invitation_create,
    membership_add,
    membership_change_role,
    membership_remove,
    org_token_create,
    org_token_revoke,
    organization_create,
    organization_settings_update,
    team_create,
    team_delete,
    team_update,
    virtual_key_create,
    virtual_key_revoke,
    virtual_key_rotate,
    virtual_key_update,
)

pytestmark = pytest.mark.django_db


@pytest.fixture
def actor(owner) -> Actor:
    return Actor.of_user(owner)


def audit_row(org, action: str) -> tuple:
    """The one audit row of this action in the org: (actor, actor label, target type, target id)."""
    return AuditEvent.objects.filter(org=org, action=action).values_list(
        "actor", "actor_label", "target_type", "target_id"
    ).get()


def test_a_new_org_gets_no_credits_of_its_own(actor):
    org = organization_create(name="Fresh", actor=actor)
    assert not CreditGrant.objects.filter(org=org).exists()


def test_a_new_org_gets_a_slug_from_its_name(actor):
    assert organization_create(name="Acme Robotics, Inc.", actor=actor).slug == "acme-robotics-inc"


def test_two_orgs_with_one_name_get_different_slugs(actor):
    first = organization_create(name="Acme", actor=actor)
    second = organization_create(name="Acme", actor=actor)
    assert first.slug != second.slug


def test_organization_create_is_audited(owner, actor):
    org = organization_create(name="Fresh", actor=actor)
    assert audit_row(org, "org.create") == (owner.pk, "owner@example.com", "Organization", str(org.pk))


def test_organization_create_makes_the_owner_an_owner_and_audits_it(owner, actor):
    org = organization_create(name="Fresh", owner=owner, actor=actor)
    membership = Membership.objects.get(org=org, user=owner)
    assert membership.role == Membership.Role.OWNER
    assert audit_row(org, "member.add") == (owner.pk, "owner@example.com", "Membership", str(membership.pk))


def test_organization_settings_update_changes_settings_and_is_audited(org, owner, actor):
    organization_settings_update(org=org, actor=actor, cache_enabled=True)
    org.refresh_from_db()
    assert (org.cache_enabled, org.store_prompts) == (True, False)
    assert audit_row(org, "org.settings") == (owner.pk, "owner@example.com", "Organization", str(org.pk))


def test_membership_add_is_audited(org, owner, outsider, actor):
    membership = membership_add(org=org, user=outsider, role=Membership.Role.ADMIN, actor=actor)
    event = AuditEvent.objects.get(org=org, action="member.add", target_id=str(membership.pk))
    assert (event.actor_id, event.actor_label, event.target_type, event.data) == (
        owner.pk, "owner@example.com", "Membership", {"user": "outsider@example.com", "role": "admin"}
    )


def _membership(org, user) -> Membership:
    return Membership.objects.get(org=org, user=user)


def test_membership_change_role_changes_it_and_is_audited(org, owner, teammate, actor):
    membership = membership_change_role(membership=_membership(org, teammate), role=Membership.Role.ADMIN,
                                        actor=actor)
    assert _membership(org, teammate).role == Membership.Role.ADMIN
    event = AuditEvent.objects.get(org=org, action="member.role")
    assert (event.actor_id, event.target_type, event.target_id, event.data) == (
        owner.pk, "Membership", str(membership.pk),
        {"user": "mate@example.com", "from": "member", "role": "admin"},
    )


def test_membership_change_role_refuses_an_unknown_role(org, teammate, actor):
    with pytest.raises(ValueError, match="Unknown role 'superuser'"):
        membership_change_role(membership=_membership(org, teammate), role="superuser", actor=actor)
    assert _membership(org, teammate).role == Membership.Role.MEMBER
    assert not AuditEvent.objects.filter(org=org, action="member.role").exists()


def test_membership_change_role_refuses_to_demote_the_last_owner(org, owner, actor):
    with pytest.raises(ValueError, match="last owner"):
        membership_change_role(membership=_membership(org, owner), role=Membership.Role.ADMIN, actor=actor)
    assert _membership(org, owner).role == Membership.Role.OWNER
    assert not AuditEvent.objects.filter(org=org, action="member.role").exists()


def test_an_owner_may_be_demoted_once_there_is_another_owner(org, owner, teammate, actor):
    membership_change_role(membership=_membership(org, teammate), role=Membership.Role.OWNER, actor=actor)
    membership_change_role(membership=_membership(org, owner), role=Membership.Role.MEMBER, actor=actor)
    assert _membership(org, owner).role == Membership.Role.MEMBER


def test_the_last_owner_check_reads_the_stored_role_not_a_stale_one(org, owner, teammate, actor):
    stale_teammate = _membership(org, teammate)
    membership_change_role(membership=_membership(org, teammate), role=Membership.Role.OWNER, actor=actor)
    membership_change_role(membership=_membership(org, owner), role=Membership.Role.ADMIN, actor=actor)
    with pytest.raises(ValueError, match="last owner"):
        membership_remove(membership=stale_teammate, actor=actor)
    assert _membership(org, teammate).role == Membership.Role.OWNER


def test_membership_remove_deletes_it_and_is_audited(org, owner, teammate, actor):
    membership_pk = _membership(org, teammate).pk
    membership_remove(membership=_membership(org, teammate), actor=actor)
    assert not Membership.objects.filter(org=org, user=teammate).exists()
    event = AuditEvent.objects.get(org=org, action="member.remove")
    assert (event.actor_id, event.target_type, event.target_id, event.data) == (
        owner.pk, "Membership", str(membership_pk), {"user": "mate@example.com", "role": "member"},
    )


def test_membership_remove_refuses_to_remove_the_last_owner(org, owner, actor):
    with pytest.raises(ValueError, match="last owner"):
        membership_remove(membership=_membership(org, owner), actor=actor)
    assert _membership(org, owner).role == Membership.Role.OWNER
    assert not AuditEvent.objects.filter(org=org, action="member.remove").exists()


def test_invitation_create_is_audited(org, owner, actor):
    invitation, _ = invitation_create(org=org, email="new@example.com", role=Membership.Role.MEMBER, actor=actor)
    assert audit_row(org, "member.invite") == (owner.pk, "owner@example.com", "Invitation", str(invitation.pk))


def test_an_invitation_token_is_not_stored(org, actor):
    invitation, token = invitation_create(org=org, email="new@example.com", role=Membership.Role.MEMBER, actor=actor)
    assert token not in invitation.token_hash


def test_invitation_accept_adds_the_member_and_is_audited_as_the_new_member(org, outsider, actor):
    _, token = invitation_create(org=org, email="outsider@example.com", role=Membership.Role.ADMIN, actor=actor)
    membership = invitation_accept(token=token, user=outsider)
    assert (membership.org, membership.user, membership.role) == (org, outsider, Membership.Role.ADMIN)
    event = AuditEvent.objects.get(org=org, action="member.add", target_id=str(membership.pk))
    assert (event.actor_id, event.actor_label) == (outsider.pk, "outsider@example.com")


def test_an_invitation_is_accepted_only_once(org, outsider, django_user_model, actor):
    _, token = invitation_create(org=org, email="outsider@example.com", role=Membership.Role.ADMIN, actor=actor)
    invitation_accept(token=token, user=outsider)
    latecomer = django_user_model.objects.create_user(username="late@example.com", email="late@example.com")
    assert invitation_accept(token=token, user=latecomer) is None
    assert not Membership.objects.filter(org=org, user=latecomer).exists()


def test_team_create_is_audited(org, owner, actor):
    team = team_create(org=org, name="research", actor=actor)
    assert audit_row(org, "team.create") == (owner.pk, "owner@example.com", "Team", str(team.pk))


def test_team_update_renames_and_is_audited(org, owner, actor):
    team = team_create(org=org, name="research", actor=actor)
    team_update(team=team, name="science", actor=actor)
    assert Team.objects.get(pk=team.pk).name == "science"
    assert audit_row(org, "team.update") == (owner.pk, "owner@example.com", "Team", str(team.pk))


def test_team_delete_keeps_its_keys_and_is_audited(org, owner, actor):
    team = team_create(org=org, name="research", actor=actor)
    key, _ = virtual_key_create(org=org, name="agent", team=team, actor=actor)
    team_id = team.pk
    team_delete(team=team, actor=actor)
    key.refresh_from_db()
    assert key.team is None
    assert audit_row(org, "team.delete") == (owner.pk, "owner@example.com", "Team", str(team_id))


def test_virtual_key_create_is_audited_with_its_prefix(org, owner, actor):
    key, _ = virtual_key_create(org=org, name="agent", actor=actor)
    assert audit_row(org, "key.create") == (owner.pk, "owner@example.com", "VirtualKey", str(key.pk))
    assert AuditEvent.objects.get(org=org, action="key.create").data == {"name": "agent", "prefix": key.prefix}


def test_virtual_key_create_refuses_a_team_of_another_org(org, other_org, actor):
    their_team = team_create(org=other_org, name="theirs", actor=actor)
    with pytest.raises(ValueError, match="another organization"):
        virtual_key_create(org=org, name="agent", team=their_team, actor=actor)


def test_virtual_key_update_changes_limits_and_is_audited(org, owner, actor):
    key, _ = virtual_key_create(org=org, name="agent", actor=actor)
    virtual_key_update(key=key, actor=actor, rpm_limit=60, allowed_models=["gpt-4o-mini"])
    key.refresh_from_db()
    assert (key.rpm_limit, key.allowed_models) == (60, ["gpt-4o-mini"])
    assert audit_row(org, "key.update") == (owner.pk, "owner@example.com", "VirtualKey", str(key.pk))


def test_virtual_key_update_refuses_fields_that_need_their_own_service(org, actor):
    key, _ = virtual_key_create(org=org, name="agent", actor=actor)
    with pytest.raises(ValueError, match="not editable: prefix"):
        virtual_key_update(key=key, actor=actor, prefix="stolen")


def test_virtual_key_update_refuses_a_team_of_another_org(org, other_org, actor):
    key, _ = virtual_key_create(org=org, name="agent", actor=actor)
    their_team = team_create(org=other_org, name="theirs", actor=actor)
    with pytest.raises(ValueError, match="another organization"):
        virtual_key_update(key=key, actor=actor, team=their_team)


def test_virtual_key_revoke_is_audited(org, owner, actor):
    key, _ = virtual_key_create(org=org, name="agent", actor=actor)
    virtual_key_revoke(key=key, actor=actor)
    assert audit_row(org, "key.revoke") == (owner.pk, "owner@example.com", "VirtualKey", str(key.pk))


def test_revoking_a_key_twice_keeps_the_first_revocation(org, actor):
    key, _ = virtual_key_create(org=org, name="agent", actor=actor)
    first = virtual_key_revoke(key=key, actor=actor).revoked
    virtual_key_revoke(key=key, actor=actor)
    key.refresh_from_db()
    assert key.revoked == first
    assert AuditEvent.objects.filter(org=org, action="key.revoke").count() == 1


def test_virtual_key_rotate_is_audited_with_both_prefixes(org, owner, actor):
    key, _ = virtual_key_create(org=org, name="agent", actor=actor)
    old_prefix = key.prefix
    virtual_key_rotate(key=key, actor=actor)
    assert audit_row(org, "key.rotate") == (owner.pk, "owner@example.com", "VirtualKey", str(key.pk))
    assert AuditEvent.objects.get(org=org, action="key.rotate").data == {"old_prefix": old_prefix, "prefix": key.prefix}


@pytest.fixture
def announced():
    """The prefixes this process's workers are told changed (keys.invalidation)."""
    prefixes: list[str | None] = []

    def listener(*, prefix, org_id, catalog) -> None:
        prefixes.append(prefix)

    invalidation.listen(listener)
    yield prefixes
    invalidation.forget(listener)


def test_a_new_key_announces_its_prefix_once_committed(org, actor, announced, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        key, _ = virtual_key_create(org=org, name="agent", actor=actor)

    assert announced == [key.prefix]


def test_rotating_a_key_announces_the_old_prefix_and_the_new(org, actor, announced, django_capture_on_commit_callbacks):
    key, _ = virtual_key_create(org=org, name="agent", actor=actor)
    old_prefix = key.prefix

    with django_capture_on_commit_callbacks(execute=True):
        virtual_key_rotate(key=key, actor=actor)

    assert announced == [old_prefix, key.prefix]


def test_org_token_create_is_audited(org, owner, actor):
    token, _ = org_token_create(org=org, name="ci", actor=actor)
    assert audit_row(org, "token.create") == (owner.pk, "owner@example.com", "OrgToken", str(token.pk))


def test_org_token_revoke_is_audited(org, owner, actor):
    token, _ = org_token_create(org=org, name="ci", actor=actor)
    org_token_revoke(token=token, actor=actor)
    assert audit_row(org, "token.revoke") == (owner.pk, "owner@example.com", "OrgToken", str(token.pk))


def test_revoking_a_token_twice_keeps_the_first_revocation(org, actor):
    token, _ = org_token_create(org=org, name="ci", actor=actor)
    first = org_token_revoke(token=token, actor=actor).revoked
    org_token_revoke(token=token, actor=actor)
    token.refresh_from_db()
    assert token.revoked == first
    assert AuditEvent.objects.filter(org=org, action="token.revoke").count() == 1


def test_a_command_acts_under_its_own_label(system_actor):
    org = organization_create(name="Fresh", actor=system_actor)
    assert audit_row(org, "org.create") == (None, "test", "Organization", str(org.pk))
