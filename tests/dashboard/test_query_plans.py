"""Every page reads the request log through an index, scoped by its org.

A test table is small enough that PostgreSQL would scan it whole anyway; with sequential scans
switched off, a plan that still has one on the log has no index to use, and would read every
row of every org on a large table. The plan of each query a page makes on the log is checked.
"""

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

# Plans are PostgreSQL's (EXPLAIN): the embedded SQLite has other ones.
pytestmark = [pytest.mark.django_db, pytest.mark.postgres]

LOG_TABLE = '"analytics_requestlog"'
PAGES = [
    "/overview/",
    "/keys/",
    "/keys/{key}/",
    "/log/",
    "/log/?status_class=errors",
    "/log/?fallback_only=on",
    "/log/?request_id=req-plan-1",
    "/log/?model=gemini&run=plan",
    "/log/?key={key}&status=502",
    "/log/?tag=eu",
    "/log/?tag=customer:acme&status_class=errors",
    "/log/req-plan-1/",
    "/runs/",
    "/runs/?run=plan",
    "/runs/plan-run",
    "/playground/?from=req-plan-1",
    "/spend/",
    "/teams/",
]


def _log_queries(client, path: str) -> list[str]:
    with CaptureQueriesContext(connection) as captured:
        assert client.get(path).status_code == 200, path
    return [query["sql"] for query in captured.captured_queries
            if LOG_TABLE in query["sql"] and query["sql"].lstrip().upper().startswith("SELECT")]


def plan_of(sql: str) -> str:
    """The plan PostgreSQL makes of ``sql`` where a sequential scan is a last resort."""
    with connection.cursor() as cursor:
        cursor.execute("SET LOCAL enable_seqscan = off")
        cursor.execute(f"EXPLAIN {sql}")
        plan = "\n".join(row[0] for row in cursor.fetchall())
        cursor.execute("SET LOCAL enable_seqscan = on")
    return plan


@pytest.mark.parametrize("path", PAGES)
def test_the_page_reads_the_log_through_an_index_of_its_org(owner_client, key, make_log, path):
    make_log(key, request_id="req-plan-1", run_id="plan-run", tags=["eu", "customer:acme"],
             request_body={"model": "gemini-2.5-flash", "messages": [{"role": "user", "content": "hi"}]})
    make_log(key, status=502, run_id="plan-run")
    path = path.format(key=key.pk)

    queries = _log_queries(owner_client, path)

    assert queries, f"{path} reads no log row: nothing to check"
    for sql in queries:
        assert '"org_id" =' in sql, sql
        assert "Seq Scan on analytics_requestlog" not in plan_of(sql), (path, sql)


def test_the_check_catches_a_read_of_the_whole_log(key, make_log):
    make_log(key)

    assert "Seq Scan on analytics_requestlog" in plan_of(f"SELECT SUM(cost) FROM {LOG_TABLE} WHERE cost > 0")


def test_the_runs_list_sums_each_run_in_one_pass_over_its_steps(owner_client, key, make_log):
    for number in range(3):
        make_log(key, run_id="plan-run", status=502 if number == 2 else 200)

    queries = _log_queries(owner_client, "/runs/")

    summary = next(sql for sql in queries if "GROUP BY" in sql)
    # A subquery per row (the run's last status, its first key) would run once for every step.
    assert "SubPlan" not in plan_of(summary), summary
