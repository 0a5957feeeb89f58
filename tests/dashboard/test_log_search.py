"""Log search: status classes, errors and fallbacks only, a request id, model and run by prefix,
the key's name beside its prefix, and newer / older paging."""

import re

import pytest

from dashboard.views.activity import LOG_PAGE

pytestmark = pytest.mark.django_db

FELL_BACK = [{"deployment": "flash-vertex", "outcome": "timeout", "latency_ms": 30000},
             {"deployment": "flash-backup", "outcome": "ok", "latency_ms": 640}]


def _listed(response) -> list[str]:
    assert response.status_code == 200
    return re.findall(r'data-request-id="([^"]+)"', response.content.decode())


@pytest.fixture
def calls(key, make_log) -> dict:
    return {
        "ok": make_log(key, request_id="req-ok", status=200, run_id="support-7/step"),
        "refused": make_log(key, request_id="req-refused", status=402, model="gemini-2.5-pro"),
        "broken": make_log(key, request_id="req-broken", status=502, run_id="support-8"),
        "fell-back": make_log(key, request_id="req-fell-back", status=200, attempts=FELL_BACK,
                              model="gemini-2.5-flash-lite", run_id="billing-1"),
    }


@pytest.mark.parametrize("status_class, expected", [
    ("2xx", ["req-fell-back", "req-ok"]),
    ("4xx", ["req-refused"]),
    ("5xx", ["req-broken"]),
    ("errors", ["req-broken", "req-refused"]),
])
def test_the_log_filters_by_status_class(owner_client, calls, status_class, expected):
    assert _listed(owner_client.get("/log/", {"status_class": status_class})) == expected


def test_the_log_shows_only_calls_that_fell_back(owner_client, calls):
    assert _listed(owner_client.get("/log/", {"fallback_only": "on"})) == ["req-fell-back"]


def test_the_log_finds_a_call_by_its_request_id_pasted_with_spaces(owner_client, calls):
    assert _listed(owner_client.get("/log/", {"request_id": "  req-broken "})) == ["req-broken"]


def test_the_log_matches_model_and_run_by_prefix(owner_client, calls):
    assert _listed(owner_client.get("/log/", {"model": "gemini-2.5-flash"})) == [
        "req-fell-back", "req-broken", "req-ok"]
    assert _listed(owner_client.get("/log/", {"run": "support-"})) == ["req-broken", "req-ok"]
    assert _listed(owner_client.get("/log/", {"run": "support-7/"})) == ["req-ok"]


def test_the_search_never_reaches_another_org(owner_client, calls, other_key, make_log):
    make_log(other_key, request_id="req-theirs", status=502)

    assert _listed(owner_client.get("/log/", {"request_id": "req-theirs"})) == []
    assert "req-theirs" not in _listed(owner_client.get("/log/", {"status_class": "5xx"}))


def test_a_bad_status_class_is_a_400(owner_client):
    assert owner_client.get("/log/", {"status_class": "6xx"}).status_code == 400


def test_the_log_names_the_key_beside_its_prefix(owner_client, key, calls):
    page = owner_client.get("/log/").content.decode()

    assert f"<code>{key.prefix}</code> <span class=\"small muted\" data-key-name>researcher</span>" in page


def test_older_then_newer_pages_come_back_to_the_same_rows(owner_client, key, make_log):
    made = [make_log(key).request_id for _ in range(LOG_PAGE + 5)][::-1]

    first = owner_client.get("/log/")
    older_link = re.search(r'rel="next" href="([^"]+)"', first.content.decode()).group(1).replace("&amp;", "&")
    older = owner_client.get(f"/log/{older_link}")
    newer_link = re.search(r'rel="prev" href="([^"]+)"', older.content.decode()).group(1).replace("&amp;", "&")
    newer = owner_client.get(f"/log/{newer_link}")

    assert _listed(first) == made[:LOG_PAGE]
    assert _listed(older) == made[LOG_PAGE:]
    assert _listed(newer) == made[:LOG_PAGE]
    assert 'rel="prev"' not in first.content.decode() and 'rel="prev"' not in newer.content.decode()


def test_an_empty_log_says_how_to_make_the_first_call(owner_client):
    page = owner_client.get("/log/").content.decode()

    assert "data-quickstart" in page and "/v1" in page and "Issue a key" in page


def test_a_search_that_finds_nothing_says_so_without_the_quickstart(owner_client, calls):
    page = owner_client.get("/log/", {"request_id": "req-nowhere"}).content.decode()

    assert "No calls match these filters." in page and "data-quickstart" not in page
