"""The playground page and a key's test call, server side: which keys and models it offers, a
stored call loaded into it, and every id another org's. The calls themselves are the browser's
(tests/dashboard/test_browser_playground.py)."""

import html
import json
import re

import pytest

from dashboard.playground import client_request
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


RESPONSES_STORED = {"model": "gemini-2.5-flash", "instructions": "You answer about orders.",
                    "input": [{"role": "user", "content": "Where is order 1042?"}], "max_output_tokens": 60}
MESSAGES_STORED = {"model": "gemini-2.5-flash", "max_tokens": 60, "system": "You answer about orders.",
                   "messages": [{"role": "user", "content": "Where is order 1042?"}]}


@pytest.mark.parametrize(("endpoint", "body"), [("responses", RESPONSES_STORED), ("messages", MESSAGES_STORED),
                                                ("responses", {"model": "gemini-2.5-flash", "input": "Hello"})])
def test_a_stored_responses_or_messages_call_opens_in_the_playground_with_its_own_api(
        owner_client, key, make_log, endpoint, body):
    row = make_log(key, endpoint=endpoint, request_body=body)

    detail = owner_client.get(f"/log/{row.request_id}/").content.decode()
    page = owner_client.get(f"/playground/?from={row.request_id}").content.decode()

    assert f'href="/playground/?from={row.request_id}"' in detail
    assert _script(page, "pg-stored") == body and _script(page, "pg-stored-api") == endpoint
    assert re.search(rf'<option value="{endpoint}" data-path="/v1/{endpoint}" selected>', page)


def test_the_playground_offers_the_three_client_apis_and_starts_with_the_one_asked_for(owner_client, key):
    default = owner_client.get("/playground/").content.decode()
    asked = owner_client.get("/playground/?api=messages").content.decode()
    unknown = owner_client.get("/playground/?api=embeddings").content.decode()

    assert re.findall(r'<option value="([a-z.]+)" data-path="(/v1/[a-z/]+)"', default) == [
        ("chat.completions", "/v1/chat/completions"), ("responses", "/v1/responses"), ("messages", "/v1/messages")]
    assert _script(default, "pg-stored-api") == "chat.completions" and _script(asked, "pg-stored-api") == "messages"
    assert 'value="messages" data-path="/v1/messages" selected' in asked
    assert _script(unknown, "pg-stored-api") == "chat.completions"


def test_a_stored_call_without_its_conversation_is_not_opened_in_the_playground(owner_client, key, make_log):
    row = make_log(key, endpoint="messages", request_body={"model": "gemini-2.5-flash", "max_tokens": 5})

    assert owner_client.get(f"/playground/?from={row.request_id}").status_code == 404


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


# A conversation with a tool, as the log keeps a Responses or Messages call: the Chat Completions
# request the gateway sent upstream.
UPSTREAM = {"model": "gemini-2.5-flash", "messages": [
    {"role": "system", "content": "You answer about orders."},
    {"role": "user", "content": "Where is order 1042?"},
    {"role": "assistant", "content": None, "tool_calls": [
        {"id": "call_1", "type": "function", "function": {"name": "lookup", "arguments": "{\"order\": 1042}"}}]},
    {"role": "tool", "tool_call_id": "call_1", "content": "shipped"}],
    "tools": [{"type": "function", "function": {"name": "lookup", "description": "Finds an order",
                                                "parameters": {"type": "object"}}}],
    "tool_choice": "required", "max_completion_tokens": 60, "stream": True, "stream_options": {"include_usage": True}}


def test_a_responses_call_kept_as_its_upstream_request_is_written_back_as_a_responses_request():
    assert client_request("responses", UPSTREAM) == {
        "instructions": "You answer about orders.", "model": "gemini-2.5-flash",
        "input": [{"role": "user", "content": "Where is order 1042?"},
                  {"type": "function_call", "call_id": "call_1", "name": "lookup", "arguments": "{\"order\": 1042}"},
                  {"type": "function_call_output", "call_id": "call_1", "output": "shipped"}],
        "tools": [{"type": "function", "name": "lookup", "description": "Finds an order",
                   "parameters": {"type": "object"}}],
        "tool_choice": "required", "max_output_tokens": 60, "stream": True}


def test_a_messages_call_kept_as_its_upstream_request_is_written_back_as_an_anthropic_request():
    assert client_request("messages", UPSTREAM) == {
        "system": "You answer about orders.", "model": "gemini-2.5-flash",
        "messages": [{"role": "user", "content": "Where is order 1042?"},
                     {"role": "assistant", "content": [{"type": "tool_use", "id": "call_1", "name": "lookup",
                                                        "input": {"order": 1042}}]},
                     {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "call_1",
                                                   "content": "shipped"}]}],
        "tools": [{"name": "lookup", "description": "Finds an order", "input_schema": {"type": "object"}}],
        "tool_choice": {"type": "any"}, "max_tokens": 60, "stream": True}


def test_a_body_in_its_apis_own_shape_is_left_as_it_is():
    assert client_request("responses", RESPONSES_STORED) == RESPONSES_STORED
    assert client_request("messages", MESSAGES_STORED) == MESSAGES_STORED
    assert client_request("chat.completions", UPSTREAM) == UPSTREAM


def test_a_stored_responses_calls_curl_sends_a_responses_request(owner_client, key, make_log):
    row = make_log(key, endpoint="responses", request_body=UPSTREAM)

    page = html.unescape(owner_client.get(f"/log/{row.request_id}/").content.decode())

    curl = page.split('id="again-curl"')[1].split("</pre>")[0]
    assert "/v1/responses" in curl and '"input": [' in curl and '"instructions": ' in curl
    stored = _script(owner_client.get(f"/playground/?from={row.request_id}").content.decode(), "pg-stored")
    assert stored == client_request("responses", UPSTREAM)
