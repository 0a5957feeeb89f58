"""Every form that changes something carries a CSRF token, and a POST without one is refused."""

import re

import pytest
from django.test import Client

from analytics.services import sink_create
from keys.services import team_create

pytestmark = pytest.mark.django_db

PAGES = ["/keys/", "/keys/new/", "/keys/{key}/", "/keys/{key}/edit/", "/keys/{key}/revoke/", "/keys/{key}/rotate/",
         "/teams/", "/teams/{team}/edit/", "/teams/{team}/delete/", "/log/", "/runs/", "/spend/", "/settings/",
         "/settings/sinks/{sink}/delete/"]
PUBLIC_PAGES = ["/login/", "/signup/", "/invite/some-token"]


def _post_forms(html: str) -> list[str]:
    return re.findall(r"<form[^>]*method=\"post\"[^>]*>.*?</form>", html, re.S | re.I)


@pytest.fixture
def ids(org, key, system_actor) -> dict:
    team = team_create(org=org, name="research", actor=system_actor)
    sink = sink_create(org=org, type="datadog", config={"api_key": "k"}, actor=system_actor)
    return {"key": key.pk, "team": team.pk, "sink": sink.pk}


@pytest.mark.parametrize("path", PAGES)
def test_every_post_form_of_a_page_has_a_csrf_token(owner_client, ids, path):
    forms = _post_forms(owner_client.get(path.format(**ids)).content.decode())

    assert forms
    assert all("csrfmiddlewaretoken" in form for form in forms)


@pytest.mark.parametrize("path", PUBLIC_PAGES)
def test_every_post_form_of_a_public_page_has_a_csrf_token(path):
    forms = _post_forms(Client().get(path).content.decode())

    assert forms
    assert all("csrfmiddlewaretoken" in form for form in forms)


def test_a_post_without_the_token_is_refused(owner, key):
    client = Client(enforce_csrf_checks=True)
    client.force_login(owner)

    response = client.post(f"/keys/{key.pk}/revoke/")

    assert response.status_code == 403
    key.refresh_from_db()
    assert key.revoked is None


def test_sign_up_without_the_token_is_refused():
    response = Client(enforce_csrf_checks=True).post(
        "/signup/", {"email": "a@example.com", "password": "a-long-passphrase-42", "org_name": "A"})

    assert response.status_code == 403
