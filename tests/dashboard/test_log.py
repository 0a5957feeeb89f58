import re
from datetime import timedelta
from decimal import Decimal

import pytest
from django.utils import timezone

from keys.services import virtual_key_create

pytestmark = pytest.mark.django_db


def test_the_log_lists_the_orgs_calls(owner_client, key, make_log):
    row = make_log(key, model="gemini-2.5-pro", cost=Decimal("0.000375"))

    page = owner_client.get("/log/").content.decode()

    assert row.request_id in page
    assert "gemini-2.5-pro" in page
    assert "$0.000375" in page


def test_the_log_does_not_show_another_orgs_calls(owner_client, other_key, make_log):
    theirs = make_log(other_key)

    assert theirs.request_id not in owner_client.get("/log/").content.decode()


def test_a_member_reads_the_log(member_client, key, make_log):
    row = make_log(key)

    assert row.request_id in member_client.get("/log/").content.decode()


@pytest.mark.parametrize("query, shown, hidden", [
    ("model=gemini-2.5-pro", "pro", "flash"),
    ("status=429", "limited", "ok"),
    ("cache=hit", "cached", "ok"),
    ("deployment=flash-backup", "backup", "ok"),
    ("run=run-7", "in-run", "ok"),
])
def test_the_log_filters(owner_client, key, make_log, query, shown, hidden):
    rows = {
        "pro": make_log(key, model="gemini-2.5-pro"),
        "flash": make_log(key, model="gemini-2.5-flash"),
        "limited": make_log(key, model="gemini-2.5-pro", status=429),
        "ok": make_log(key, model="gemini-2.5-flash", status=200),
        "cached": make_log(key, cache="hit"),
        "backup": make_log(key, deployment="flash-backup"),
        "in-run": make_log(key, run_id="run-7"),
    }

    page = owner_client.get(f"/log/?{query}").content.decode()

    assert rows[shown].request_id in page
    assert rows[hidden].request_id not in page


def test_the_log_filters_by_key(owner_client, org, key, make_log, system_actor):
    second, _ = virtual_key_create(org=org, name="second", actor=system_actor)
    mine, theirs = make_log(key), make_log(second)

    page = owner_client.get(f"/log/?key={key.pk}").content.decode()

    assert mine.request_id in page
    assert theirs.request_id not in page


def test_the_log_filters_by_time(owner_client, key, make_log):
    old = make_log(key, created=timezone.now() - timedelta(days=3))
    new = make_log(key, created=timezone.now() - timedelta(hours=1))
    since = (timezone.now() - timedelta(days=1)).strftime("%Y-%m-%dT%H:%M")

    page = owner_client.get(f"/log/?since={since}").content.decode()

    assert new.request_id in page
    assert old.request_id not in page


@pytest.mark.parametrize("query", [
    "status=abc", "status=99999", "since=yesterday", "until=2025-13-45T99:99", "key=not-a-number",
    "cache=sometimes", "key=999999",
])
def test_bad_filters_are_a_400_with_the_form_not_a_500(owner_client, query):
    response = owner_client.get(f"/log/?{query}")

    assert response.status_code == 400
    assert 'class="errorlist"' in response.content.decode()


def test_a_key_of_another_org_is_not_a_filter_choice(owner_client, other_key):
    response = owner_client.get(f"/log/?key={other_key.pk}")

    assert response.status_code == 400


def test_the_log_pages_with_an_older_link(owner_client, key, make_log):
    rows = [make_log(key) for _ in range(52)]
    first = owner_client.get("/log/").content.decode()
    older = re.search(r'href="(\?cursor=[^"]+)"', first).group(1).replace("&amp;", "&")

    second = owner_client.get(f"/log/{older}").content.decode()

    assert rows[-1].request_id in first
    assert rows[0].request_id not in first
    assert rows[0].request_id in second
    assert rows[-1].request_id not in second


def test_the_older_link_keeps_the_filters(owner_client, key, make_log):
    for _ in range(51):
        make_log(key, model="gemini-2.5-pro")

    page = owner_client.get("/log/?model=gemini-2.5-pro").content.decode()

    assert re.search(r'href="\?model=gemini-2.5-pro&amp;cursor=', page)


def test_a_bad_cursor_shows_the_newest_calls_with_a_notice(owner_client, key, make_log):
    row = make_log(key)

    response = owner_client.get("/log/?cursor=garbage!!")

    assert response.status_code == 200
    assert "no longer valid" in response.content.decode()
    assert row.request_id in response.content.decode()


def test_a_row_opens_the_call_with_its_attempts_tokens_cost_and_tool_calls(owner_client, key, make_log):
    row = make_log(
        key,
        attempts=[{"deployment": "flash-vertex", "outcome": "timeout", "latency_ms": 30000},
                  {"deployment": "flash-backup", "outcome": "ok", "latency_ms": 812}],
        deployment="flash-backup",
        tool_calls=[{"name": "search_docs", "arguments": '{"q": "refund policy"}'}],
        prompt_tokens=1234, completion_tokens=56, cost=Decimal("0.012345"), finish_reason="tool_calls",
    )

    page = owner_client.get(f"/log/{row.request_id}/").content.decode()

    assert "timeout" in page
    assert "30.00 s" in page
    assert "812 ms" in page
    assert "1234 in" in page
    assert "56 out" in page
    assert "$0.01" in page
    assert "search_docs" in page
    assert "refund policy" in page
    assert "tool_calls" in page


def test_a_failed_call_shows_its_error(owner_client, key, make_log):
    row = make_log(key, status=502, error="every link of the chain failed", deployment="")

    page = owner_client.get(f"/log/{row.request_id}/").content.decode()

    assert "every link of the chain failed" in page


def test_stored_bodies_are_shown_escaped(owner_client, key, make_log):
    row = make_log(key, request_body={"messages": [{"role": "user", "content": "<script>alert(1)</script>"}]},
                   response_body={"choices": []})

    page = owner_client.get(f"/log/{row.request_id}/").content.decode()

    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "<script>alert(1)</script>" not in page


def test_an_outsider_gets_404_for_another_orgs_call(outsider_client, key, make_log):
    row = make_log(key)

    assert outsider_client.get(f"/log/{row.request_id}/").status_code == 404


def test_a_call_that_does_not_exist_is_404(owner_client):
    assert owner_client.get("/log/req_nope/").status_code == 404


def test_a_call_that_cost_more_than_it_reserved_says_so(owner_client, key, make_log):
    over = make_log(key, cost=Decimal("0.009000"), overshoot=Decimal("0.001500"))
    within = make_log(key, cost=Decimal("0.009000"))

    over_page = owner_client.get(f"/log/{over.request_id}/").content.decode()
    within_page = owner_client.get(f"/log/{within.request_id}/").content.decode()

    assert "Over its reservation" in over_page
    assert "Over its reservation" not in within_page


@pytest.mark.parametrize("path", ["/log/%00/", "/log/req%00x/"])
def test_a_call_id_no_row_can_have_is_404_too(owner_client, path):
    assert owner_client.get(path).status_code == 404
