"""The playground page and a key's test call, server side: which keys and models it offers, a
stored call loaded into it, and every id another org's. The calls themselves are the browser's
(tests/dashboard/test_browser_playground.py)."""

import html
import json
import re

import pytest

from keys.services import virtual_key_create, virtual_key_revoke

pytestmark = pytest.mark.django_db

STORED = {"temperature": 0.3, "model": "gemini-2.5-flash", "messages": [
    {"role": "system", "content": "You answer about orders."}, {"role": "user", "content": "Where is order 1042?"}]}


def _script(page: str, name: str):
    return json.loads(html.unescape(re.search(rf'<script id="{name}" type="application/json">(.*?)</script>',
                                              page, re.S).group(1)))


def test_the_playground_offers_the_orgs_keys_with_the_chat_models_each_may_use(owner_client, org, key, other_key,
                                                                               system_actor):
    narrow, _ = virtual_key_create(org=org, name="narrow", actor=system_actor, allowed_models=["gemini-2.5-pro"])

    keys = {choice["name"]: choice for choice in _script(owner_client.get("/playground/").content.decode(), "pg-keys")}

    assert set(keys) == {"researcher", "narrow"}
    assert keys["narrow"]["models"] == ["gemini-2.5-pro"]
    assert "gemini-2.5-flash" in keys["researcher"]["models"]
    assert "text-embedding-005" not in keys["researcher"]["models"]
    assert keys["researcher"]["prefix"] == key.prefix


def test_a_revoked_key_is_offered_as_revoked(owner_client, key, system_actor):
    virtual_key_revoke(key=key, actor=system_actor)

    (choice,) = _script(owner_client.get("/playground/").content.decode(), "pg-keys")

    assert choice["usable"] is False


def test_a_stored_call_opens_in_the_playground_with_its_request_and_key(owner_client, org, key, make_log,
                                                                        system_actor):
    virtual_key_create(org=org, name="another", actor=system_actor)
    row = make_log(key, request_body=STORED)

    page = owner_client.get(f"/playground/?from={row.request_id}").content.decode()

    stored = _script(page, "pg-stored")
    assert stored == STORED and list(stored) == list(STORED)
    assert f'<option value="{key.pk}" data-prefix="{key.prefix}" selected>' in page
    assert row.request_id in page.split("data-replaying")[1]


def test_the_call_page_opens_a_chat_call_in_the_playground(owner_client, key, make_log):
    row = make_log(key, request_body=STORED)

    page = owner_client.get(f"/log/{row.request_id}/").content.decode()

    assert f'href="/playground/?from={row.request_id}"' in page


def test_a_call_of_another_api_is_not_opened_in_the_playground(owner_client, key, make_log):
    row = make_log(key, endpoint="embeddings", model="text-embedding-005",
                   request_body={"model": "text-embedding-005", "input": "hello"})

    assert "data-open-in-playground" not in owner_client.get(f"/log/{row.request_id}/").content.decode()
    assert owner_client.get(f"/playground/?from={row.request_id}").status_code == 404


def test_a_call_without_its_body_is_not_opened_in_the_playground(owner_client, key, make_log):
    row = make_log(key)

    assert owner_client.get(f"/playground/?from={row.request_id}").status_code == 404


def test_an_outsider_gets_404_for_another_orgs_call_or_key_in_the_playground(outsider_client, key, make_log):
    row = make_log(key, request_body=STORED)

    assert outsider_client.get(f"/playground/?from={row.request_id}").status_code == 404
    assert outsider_client.get(f"/playground/?key={key.pk}").status_code == 404
    assert outsider_client.get("/playground/?key=not-a-number").status_code == 404


def test_an_outsiders_playground_offers_none_of_the_orgs_keys(outsider_client, key):
    page = outsider_client.get("/playground/").content.decode()

    assert key.prefix not in page


def test_a_member_uses_the_playground(member_client, key):
    assert member_client.get(f"/playground/?key={key.pk}").status_code == 200


def test_a_keys_page_offers_a_test_call_with_a_model_it_may_use(owner_client, org, system_actor):
    key, _ = virtual_key_create(org=org, name="pro-only", actor=system_actor, allowed_models=["gemini-2.5-pro"])

    page = owner_client.get(f"/keys/{key.pk}/").content.decode()

    test = page.split("data-key-test")[1].split(">")[0]
    assert 'data-model="gemini-2.5-pro"' in test and f'data-prefix="{key.prefix}"' in test
    assert "data-test-secret" in page


def test_a_revoked_keys_page_offers_no_test_call(owner_client, key, system_actor):
    virtual_key_revoke(key=key, actor=system_actor)

    assert "data-key-test" not in owner_client.get(f"/keys/{key.pk}/").content.decode()


def test_the_key_issued_page_tests_the_key_with_the_secret_it_shows(owner_client):
    response = owner_client.post("/keys/new/", {"name": "pro-bot", "allowed_models": ["gemini-2.5-pro"],
                                                "budget_period": "none"}, follow=True)
    page = response.content.decode()

    assert 'data-secret-from="#secret"' in page and "data-test-secret" not in page
    assert 'data-open-playground="#secret"' in page
    block = re.search(r'data-use="python">(.*?)</pre>', page, re.S).group(1)
    assert 'model="gemini-2.5-pro"' in block
