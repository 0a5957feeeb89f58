import re
import time
from decimal import Decimal

import pytest
from django.contrib.auth import get_user_model
from django.test import Client

from dashboard.selectors import credit_balance
from keys.audit import Actor
from keys.models import Membership, Organization
from keys.services import invitation_create, organization_create

pytestmark = pytest.mark.django_db

SIGNUP = {"email": "Ada@Example.com", "password": "a-long-passphrase-42", "org_name": "Analytical Engines"}


def _invite_link(response) -> str:
    return re.search(r"/invite/[\w-]+", response.content.decode()).group(0)


def test_sign_up_creates_the_user_and_an_org_with_five_dollars_of_credits():
    client = Client()

    response = client.post("/signup/", SIGNUP)

    assert response.status_code == 302
    user = get_user_model().objects.get(username="ada@example.com")
    membership = Membership.objects.get(user=user)
    assert membership.role == Membership.Role.OWNER
    assert membership.org.name == "Analytical Engines"
    assert credit_balance(org=membership.org) == Decimal("5.00")


def test_sign_up_signs_the_new_user_in_and_shows_the_balance():
    client = Client()
    client.post("/signup/", SIGNUP)

    response = client.get("/teams/")

    assert response.status_code == 200
    assert "$5.00" in response.content.decode()


def test_sign_up_refuses_an_email_that_already_has_an_account(owner):
    response = Client().post("/signup/", {**SIGNUP, "email": "OWNER@example.com"})

    assert response.status_code == 200
    assert "already an account" in response.content.decode()
    assert not Organization.objects.filter(name="Analytical Engines").exists()


def test_sign_up_refuses_a_weak_password():
    response = Client().post("/signup/", {**SIGNUP, "password": "password"})

    assert response.status_code == 200
    assert not get_user_model().objects.filter(username="ada@example.com").exists()


def test_log_in_takes_the_email_in_any_case(owner, org):
    client = Client()

    response = client.post("/login/", {"username": "Owner@Example.com", "password": "pw-owner-123"})

    assert response.status_code == 302
    assert client.get("/keys/").status_code == 200


THROTTLED = "Too many failed sign-in attempts"
WRONG = "Please enter a correct username and password"


def sign_in(client: Client, username: str, password: str, ip: str = "198.51.100.7") -> str:
    """Posts the log-in form from ``ip`` and returns the page (empty when it signed in)."""
    return client.post("/login/", {"username": username, "password": password}, REMOTE_ADDR=ip).content.decode()


def signed_in(client: Client) -> bool:
    return client.get("/keys/").status_code == 200


def test_after_five_wrong_passwords_even_the_right_one_is_refused(owner, org):
    client = Client()
    failures = [WRONG in sign_in(client, "owner@example.com", f"guess-{n}") for n in range(5)]

    refused = sign_in(client, "owner@example.com", "pw-owner-123")

    assert failures == [True] * 5
    assert THROTTLED in refused
    assert not signed_in(client)


def test_the_pause_holds_for_the_username_from_another_address(owner, org):
    for n in range(5):
        sign_in(Client(), "Owner@Example.com", f"guess-{n}", ip="198.51.100.7")
    client = Client()

    refused = sign_in(client, "owner@example.com", "pw-owner-123", ip="203.0.113.9")

    assert THROTTLED in refused
    assert not signed_in(client)


def test_the_pause_holds_for_the_address_whatever_the_username(owner, org):
    for n in range(5):
        sign_in(Client(), f"someone-{n}@example.com", "guess", ip="198.51.100.7")
    from_there, from_elsewhere = Client(), Client()

    refused = sign_in(from_there, "owner@example.com", "pw-owner-123", ip="198.51.100.7")
    sign_in(from_elsewhere, "owner@example.com", "pw-owner-123", ip="203.0.113.9")

    assert THROTTLED in refused
    assert (signed_in(from_there), signed_in(from_elsewhere)) == (False, True)


def test_a_successful_sign_in_clears_the_usernames_failures(owner, org):
    for n in range(4):
        sign_in(Client(), "owner@example.com", f"guess-{n}", ip=f"198.51.100.{n}")
    sign_in(Client(), "owner@example.com", "pw-owner-123", ip="198.51.100.50")
    for n in range(4):
        sign_in(Client(), "owner@example.com", f"guess-{n}", ip=f"198.51.100.{10 + n}")
    client = Client()

    sign_in(client, "owner@example.com", "pw-owner-123", ip="198.51.100.60")

    assert signed_in(client)


def test_the_pause_ends_when_its_window_has_passed(owner, org, settings):
    settings.NEMO_LOGIN_WINDOW_S = 1
    for n in range(5):
        sign_in(Client(), "owner@example.com", f"guess-{n}")
    client = Client()

    time.sleep(1.5)
    sign_in(client, "owner@example.com", "pw-owner-123")

    assert signed_in(client)


def test_behind_a_trusted_proxy_the_address_is_the_one_it_forwarded(owner, org, settings):
    settings.NEMO_TRUST_X_FORWARDED_FOR = True
    for n in range(5):
        Client().post("/login/", {"username": f"someone-{n}@example.com", "password": "guess"},
                      REMOTE_ADDR="10.0.0.2", HTTP_X_FORWARDED_FOR="spoofed, 198.51.100.7")
    client = Client()

    client.post("/login/", {"username": "owner@example.com", "password": "pw-owner-123"},
                REMOTE_ADDR="10.0.0.2", HTTP_X_FORWARDED_FOR="198.51.100.7, 203.0.113.9")

    assert signed_in(client)


def test_log_out_ends_the_session(owner_client):
    owner_client.post("/logout/")

    response = owner_client.get("/keys/")

    assert response.status_code == 302
    assert response["Location"].startswith("/login/")


def test_pages_send_visitors_who_are_not_signed_in_to_the_log_in_page():
    response = Client().get("/spend/")

    assert response.status_code == 302
    assert response["Location"] == "/login/?next=/spend/"


def test_owner_gets_an_invitation_link_once(owner_client):
    response = owner_client.post("/settings/members/invite/", {"email": "new@example.com", "role": "member"})

    assert response.status_code == 200
    assert re.search(r"http://testserver/invite/[\w-]{20,}", response.content.decode())
    assert "no-store" in response["Cache-Control"]


def test_a_member_cannot_invite(member_client):
    response = member_client.post("/settings/members/invite/", {"email": "new@example.com", "role": "owner"})

    assert response.status_code == 403


def test_an_admin_cannot_invite(admin_client):
    response = admin_client.post("/settings/members/invite/", {"email": "new@example.com", "role": "member"})

    assert response.status_code == 403


def test_someone_new_signs_up_through_an_invitation_and_joins_that_org(owner_client, org):
    link = _invite_link(owner_client.post("/settings/members/invite/", {"email": "new@example.com",
                                                                        "role": "admin"}))
    newcomer = Client()

    response = newcomer.post(link, {"email": "new@example.com", "password": "a-long-passphrase-42"})

    assert response.status_code == 302
    membership = Membership.objects.get(user__username="new@example.com")
    assert (membership.org, membership.role) == (org, Membership.Role.ADMIN)
    assert newcomer.get("/keys/").status_code == 200


def test_a_signed_in_user_joins_with_the_invitation_and_the_org_becomes_current(outsider_client, org, owner):
    _, token = invitation_create(org=org, email="outsider@example.com", role="member", actor=Actor.of_user(owner))

    outsider_client.post(f"/invite/{token}")

    response = outsider_client.get("/settings/")
    assert response.status_code == 200
    assert "Settings · Acme" in response.content.decode()


def test_an_invitation_works_only_once(outsider_client, org, owner):
    _, token = invitation_create(org=org, email="outsider@example.com", role="member", actor=Actor.of_user(owner))
    outsider_client.post(f"/invite/{token}")

    response = Client().post(f"/invite/{token}", {"email": "late@example.com", "password": "a-long-passphrase-42"})

    assert response.status_code == 404
    assert not get_user_model().objects.filter(username="late@example.com").exists()


def test_a_made_up_invitation_is_not_valid(outsider_client):
    response = outsider_client.post("/invite/not-a-real-token")

    assert response.status_code == 404
    assert "not valid" in response.content.decode()


def test_the_invitation_page_offers_sign_in_to_visitors():
    response = Client().get("/invite/some-token")

    assert response.status_code == 200
    assert "/login/?next=%2Finvite%2Fsome-token" in response.content.decode()


def test_the_org_switcher_changes_the_current_org(owner_client, owner, system_actor):
    second = organization_create(name="Second Venture", owner=owner, actor=system_actor)

    owner_client.post("/org/switch/", {"org": second.pk, "next": "/settings/"})

    assert "Settings · Second Venture" in owner_client.get("/settings/").content.decode()


def test_the_org_switcher_ignores_an_org_the_user_is_not_in(owner_client, other_org):
    owner_client.post("/org/switch/", {"org": other_org.pk})

    assert "Settings · Acme" in owner_client.get("/settings/").content.decode()


def test_the_org_switcher_does_not_redirect_off_site(owner_client, org):
    response = owner_client.post("/org/switch/", {"org": org.pk, "next": "https://evil.example/"})

    assert response["Location"] == "/keys/"
