"""The support staff's request-log list reads a log of millions of rows by its indexes.

The SQL of the changelist is captured: no COUNT of the whole log, no DISTINCT (date_hierarchy's
months), no MIN/MAX, no UPPER/LIKE search that no index serves. The plans are checked with
sequential scans switched off, as tests/dashboard/test_query_plans.py does for the dashboard.
"""

import re
from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from analytics.admin import BoundedCountPaginator, RequestLogAdmin
from keys.services import virtual_key_rotate
from tests.dashboard.test_query_plans import plan_of

pytestmark = pytest.mark.django_db

LOG_TABLE = '"analytics_requestlog"'
CHANGELIST = "admin:analytics_requestlog_changelist"


@pytest.fixture
def staff_client(client, django_user_model):
    client.force_login(django_user_model.objects.create_superuser(username="staff", email="staff@example.com",
                                                                  password="pw-staff-123"))
    return client


def _log_queries(client, params: dict) -> tuple[list, list[str]]:
    with CaptureQueriesContext(connection) as captured:
        response = client.get(reverse(CHANGELIST), params)
    assert response.status_code == 200, response.content[:500]
    return (list(response.context["cl"].result_list),
            [query["sql"] for query in captured.captured_queries if LOG_TABLE in query["sql"]])


def _counts_without_a_bound(sql: str) -> bool:
    """A COUNT over the log that reads every matching row (not one over a LIMITed subquery)."""
    return bool(re.search(r"COUNT\(", sql, re.IGNORECASE)) and not re.search(r"\bLIMIT\b", sql, re.IGNORECASE)


@pytest.fixture
def calls(key, other_key, make_log):
    """The call support looks for, and one of another org's key, two hours older, that no term names."""
    return [make_log(key, request_id="req-admin-find", run_id="support-run", model="gpt-4o-mini", status=502,
                     cache="hit"),
            make_log(other_key, run_id="other-run", model="gemini-2.5-flash", status=200,
                     created=timezone.now() - timedelta(hours=2))]


SEARCHES = {
    "plain": {},
    "request id": {"q": "req-admin-find"},
    "run id": {"q": "support-run"},
    "model": {"q": "gpt-4o-mini"},
    "key as shown": {"q": "sk-nemo-{prefix}…"},
    "status": {"status": "502"},
    "cache": {"cache": "hit"},
    "since": {"since": "1h"},
    "search and filter": {"q": "support-run", "status": "502"},
}


@pytest.mark.parametrize("params", SEARCHES.values(), ids=SEARCHES.keys())
def test_the_list_counts_nothing_whole_and_groups_no_months(staff_client, key, calls, params):
    params = {name: value.format(prefix=key.prefix) for name, value in params.items()}

    found, queries = _log_queries(staff_client, params)

    assert queries
    for sql in queries:
        assert not _counts_without_a_bound(sql), sql
        assert "DISTINCT" not in sql.upper(), sql
        assert not re.search(r"\b(MIN|MAX)\(", sql, re.IGNORECASE), sql
        assert "UPPER(" not in sql.upper() and " LIKE " not in sql.upper(), sql
    if params:
        assert found == [calls[0]], params


@pytest.mark.postgres  # its plans are PostgreSQL's
@pytest.mark.parametrize("params", SEARCHES.values(), ids=SEARCHES.keys())
def test_the_list_reads_the_log_through_an_index(staff_client, key, calls, params):
    params = {name: value.format(prefix=key.prefix) for name, value in params.items()}

    _, queries = _log_queries(staff_client, params)

    for sql in queries:
        assert "Seq Scan on analytics_requestlog" not in plan_of(sql), sql


def test_a_search_that_matches_nothing_lists_nothing(staff_client, calls):
    found, _ = _log_queries(staff_client, {"q": "no-such-thing"})

    assert found == []


def test_the_list_still_shows_what_support_reads_first():
    assert RequestLogAdmin.list_display[:5] == ["created", "status", "model", RequestLogAdmin.list_display[3],
                                                "latency"]
    assert "org" in RequestLogAdmin.list_display


def test_a_list_longer_than_the_count_limit_says_so(staff_client, key, make_log, monkeypatch):
    monkeypatch.setattr(BoundedCountPaginator, "COUNT_LIMIT", 3)
    for _ in range(4):
        make_log(key)
    monkeypatch.setattr(RequestLogAdmin, "list_per_page", 2)

    page = staff_client.get(reverse(CHANGELIST)).content.decode()

    assert "3+ request logs" in page


def test_a_key_rotated_away_still_finds_the_calls_made_with_it(staff_client, key, make_log, system_actor):
    old_prefix = key.prefix
    before = make_log(key, key_prefix=old_prefix)
    virtual_key_rotate(key=key, actor=system_actor)
    after = make_log(key, key_prefix=key.prefix)

    with_old, queries = _log_queries(staff_client, {"q": f"sk-nemo-{old_prefix}…"})
    with_new, _ = _log_queries(staff_client, {"q": key.prefix})

    assert (with_old, with_new) == ([before], [after, before])
    assert not any("UPPER(" in sql.upper() or " LIKE " in sql.upper() for sql in queries)
