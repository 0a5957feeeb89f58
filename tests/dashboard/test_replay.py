"""A stored call read back: its conversation as chat turns, and 'send it again' as curl and Python."""

import html
import json
import re
import shlex

import pytest

pytestmark = pytest.mark.django_db

REQUEST = {
    "model": "gemini-2.5-flash",
    "messages": [
        {"role": "system", "content": "You answer about orders."},
        {"role": "user", "content": [{"type": "text", "text": "Where is order 1042? It's 'urgent'."}]},
        {"role": "assistant", "tool_calls": [{"id": "call_1", "type": "function",
                                             "function": {"name": "lookup_order", "arguments": "{\"id\": 1042}"}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "shipped yesterday"},
    ],
    "temperature": 0,
}
RESPONSE = {"id": "chatcmpl-1", "object": "chat.completion", "choices": [
    {"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": "It shipped yesterday."}}]}


@pytest.fixture
def stored(org, key, make_log):
    return make_log(key, request_id="req-replay-1", request_body=REQUEST, response_body=RESPONSE)


def _block(page: str, name: str) -> str:
    return html.unescape(re.search(rf"<pre [^>]*data-again-{name}>(.*?)</pre>", page, re.S).group(1))


def test_a_stored_call_shows_as_chat_turns(owner_client, stored):
    page = owner_client.get("/log/req-replay-1/").content.decode()

    chat = page.split("data-conversation")[1].split("</ol>")[0]
    roles = re.findall(r'<li class="turn (\w+)">', chat)
    assert roles == ["system", "user", "assistant", "tool", "assistant"]
    assert "Where is order 1042?" in html.unescape(chat) and "It shipped yesterday." in chat
    assert "lookup_order(" in chat


def test_copy_as_curl_sends_the_stored_body_to_the_same_endpoint(owner_client, stored):
    command = shlex.split(_block(owner_client.get("/log/req-replay-1/").content.decode(), "curl").replace("\\\n", ""))

    assert command[1] == "http://testserver/v1/chat/completions"
    assert json.loads(command[command.index("-d") + 1]) == REQUEST
    assert "Authorization: Bearer $NEMO_API_KEY" in command


def test_copy_as_python_rebuilds_the_stored_body(owner_client, stored):
    snippet = _block(owner_client.get("/log/req-replay-1/").content.decode(), "python")

    body_line = next(line for line in snippet.splitlines() if line.startswith("body = "))
    namespace: dict = {"json": json}
    exec(body_line, namespace)  # the snippet's own line, as a user would run it
    assert namespace["body"] == REQUEST
    assert "client.chat.completions.create(**body)" in snippet


def test_a_call_without_a_stored_body_offers_no_replay(owner_client, key, make_log):
    make_log(key, request_id="req-bodyless")

    page = owner_client.get("/log/req-bodyless/").content.decode()

    assert "data-conversation" not in page and "data-again-curl" not in page


# Keys as a client sent them, in no order PostgreSQL's jsonb would keep (it sorts by length).
UNSORTED = {"temperature": 0.2, "model": "gemini-2.5-flash", "messages": [{"content": "hi", "role": "user"}],
            "max_tokens": 64}


def _key_order(body: dict) -> list:
    return [list(body), list(body["messages"][0])]


def test_a_stored_body_reads_back_in_its_clients_key_order(key, make_log):
    row = make_log(key, request_body=UNSORTED)
    row.refresh_from_db()

    assert _key_order(row.request_body) == _key_order(UNSORTED)


def test_the_call_page_curl_and_api_show_the_body_in_its_clients_key_order(owner_client, key, make_log):
    make_log(key, request_id="req-unsorted", request_body=UNSORTED)

    page = owner_client.get("/log/req-unsorted/").content.decode()
    shown = json.loads(html.unescape(page.split("<h3 class=\"small\">Request</h3><pre class=\"body\">")[1]
                                     .split("</pre>")[0]))
    curl = shlex.split(_block(page, "curl").replace("\\\n", ""))
    sent = json.loads(curl[curl.index("-d") + 1])
    api = owner_client.get("/api/v1/logs/req-unsorted").json()["request_body"]

    assert _key_order(shown) == _key_order(sent) == _key_order(api) == _key_order(UNSORTED)
