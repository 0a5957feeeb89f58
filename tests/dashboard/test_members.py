"""Owners change a member's role and remove members from the settings page; nobody else can."""

import re

import pytest

from keys.models import AuditEvent, Membership

pytestmark = pytest.mark.django_db


def _membership(org, user) -> Membership:
    return Membership.objects.get(org=org, user=user)


def test_an_owner_makes_a_member_admin(owner_client, org, teammate):
    member = _membership(org, teammate)

    response = owner_client.post(f"/settings/members/{member.pk}/role/", {"role": "admin"})

    assert response.status_code == 302
    assert _membership(org, teammate).role == Membership.Role.ADMIN
    assert AuditEvent.objects.filter(org=org, action="member.role", target_id=str(member.pk)).exists()


def test_an_unknown_role_is_refused_with_a_message(owner_client, org, teammate):
    member = _membership(org, teammate)

    response = owner_client.post(f"/settings/members/{member.pk}/role/", {"role": "superuser"})

    assert response.status_code == 400
    assert "Choose a role" in response.content.decode()
    assert _membership(org, teammate).role == Membership.Role.MEMBER


def test_an_owner_is_asked_before_removing_a_member(owner_client, org, teammate):
    member = _membership(org, teammate)

    page = owner_client.get(f"/settings/members/{member.pk}/remove/").content.decode()

    assert "Remove mate@example.com?" in page
    assert Membership.objects.filter(pk=member.pk).exists()


def test_an_owner_removes_a_member(owner_client, org, teammate):
    member = _membership(org, teammate)

    response = owner_client.post(f"/settings/members/{member.pk}/remove/")

    assert response.status_code == 302
    assert not Membership.objects.filter(pk=member.pk).exists()
    assert AuditEvent.objects.filter(org=org, action="member.remove", target_id=str(member.pk)).exists()


def test_demoting_the_last_owner_shows_an_error_and_changes_nothing(owner_client, org, owner):
    member = _membership(org, owner)

    response = owner_client.post(f"/settings/members/{member.pk}/role/", {"role": "member"})

    assert response.status_code == 400
    assert "last owner" in response.content.decode()
    assert _membership(org, owner).role == Membership.Role.OWNER


def test_removing_the_last_owner_shows_an_error_and_changes_nothing(owner_client, org, owner):
    member = _membership(org, owner)

    response = owner_client.post(f"/settings/members/{member.pk}/remove/")

    assert response.status_code == 400
    assert "last owner" in response.content.decode()
    assert _membership(org, owner).role == Membership.Role.OWNER


def test_an_admin_may_not_change_roles_or_remove_members(admin_client, org, teammate):
    member = _membership(org, teammate)

    responses = [
        admin_client.post(f"/settings/members/{member.pk}/role/", {"role": "owner"}),
        admin_client.get(f"/settings/members/{member.pk}/remove/"),
        admin_client.post(f"/settings/members/{member.pk}/remove/"),
    ]

    assert [response.status_code for response in responses] == [403, 403, 403]
    assert _membership(org, teammate).role == Membership.Role.MEMBER


def test_a_member_may_not_change_roles_or_remove_members(member_client, org, owner):
    member = _membership(org, owner)

    responses = [
        member_client.post(f"/settings/members/{member.pk}/role/", {"role": "member"}),
        member_client.post(f"/settings/members/{member.pk}/remove/"),
    ]

    assert [response.status_code for response in responses] == [403, 403]
    assert _membership(org, owner).role == Membership.Role.OWNER


def test_another_orgs_membership_is_not_found(owner_client, other_org, outsider):
    theirs = _membership(other_org, outsider)

    responses = [
        owner_client.post(f"/settings/members/{theirs.pk}/role/", {"role": "member"}),
        owner_client.get(f"/settings/members/{theirs.pk}/remove/"),
        owner_client.post(f"/settings/members/{theirs.pk}/remove/"),
    ]

    assert [response.status_code for response in responses] == [404, 404, 404]
    assert _membership(other_org, outsider).role == Membership.Role.OWNER


def test_owners_see_a_role_form_and_a_remove_link_per_member(owner_client, org, teammate):
    member = _membership(org, teammate)

    page = owner_client.get("/settings/").content.decode()

    assert f'action="/settings/members/{member.pk}/role/"' in page
    assert f'href="/settings/members/{member.pk}/remove/"' in page


def test_admins_see_the_members_without_those_controls(admin_client, org, teammate):
    member = _membership(org, teammate)

    page = admin_client.get("/settings/").content.decode()

    assert "mate@example.com" in page
    assert f"/settings/members/{member.pk}/" not in page


def test_the_role_forms_and_the_remove_confirmation_carry_a_csrf_token(owner_client, org, teammate):
    member = _membership(org, teammate)
    settings_page = owner_client.get("/settings/").content.decode()
    confirm_page = owner_client.get(f"/settings/members/{member.pk}/remove/").content.decode()

    role_forms = re.findall(r'<form[^>]*action="/settings/members/\d+/role/".*?</form>', settings_page, re.S)
    confirm_forms = re.findall(r'<form[^>]*method="post".*?</form>', confirm_page, re.S)

    assert len(role_forms) == Membership.objects.filter(org=org).count()
    assert all("csrfmiddlewaretoken" in form for form in role_forms + confirm_forms)
    assert confirm_forms
