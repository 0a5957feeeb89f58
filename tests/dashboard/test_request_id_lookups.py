"""A lookup by request id reads the month(s) its id's time names, and finds a row in any month.

The log is partitioned by month of ``created`` (analytics.partitions); its unique index is
(request_id, created), so a lookup by the id alone descends every month's index. A time-ordered id
(gateway.pipeline.new_request_id) says when its call arrived: each lookup adds that window, and
an id of the older shape (32 random digits) is looked for everywhere.
"""

import random
import re
from datetime import UTC, datetime, timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from analytics.partitions import (
    REQUEST_ID_SLACK,
    month_partition,
    month_start,
    partitions_ensure,
    request_id_window,
)
from analytics.reaper import logged_calls
from analytics.selectors import log_get, log_rows
from gateway.pipeline import new_request_id
from tests.api.conftest import token_client
from tests.dashboard.test_query_plans import plan_of

pytestmark = pytest.mark.django_db

LOG_TABLE = '"analytics_requestlog"'
PARTITION = re.compile(r"analytics_requestlog_(?:p\d{4}_\d{2}|default)\b")
BODY = {"model": "gemini-2.5-flash", "messages": [{"role": "user", "content": "hi"}]}


@pytest.fixture
def staff_client(client, django_user_model):
    """A signed-in superuser of the support site (the Django admin)."""
    client.force_login(django_user_model.objects.create_superuser(username="staff", email="staff@example.com",
                                                                  password="pw-staff-123"))
    return client


def _id_made_at(moment: datetime) -> str:
    """A request id as the gateway makes it at ``moment``."""
    return f"req_{int(moment.timestamp() * 1000):012x}{random.getrandbits(80):020x}"


def _months_ago(months: int) -> datetime:
    """An hour ago, or mid-month ``months`` months before this one."""
    if months == 0:
        return timezone.now() - timedelta(hours=1)
    return month_start(timezone.now(), months_later=-months) + timedelta(days=14, hours=3)


def _call(make_log, key, moment: datetime, request_id: str | None = None):
    row = make_log(key, request_id=request_id or _id_made_at(moment), created=moment, request_body=BODY)
    partitions_ensure()  # a past month's rows land in the DEFAULT partition until their month is made
    return row


def _partitions_read(sql: str) -> set[str]:
    return set(PARTITION.findall(plan_of(sql)))


def _window_partitions(request_id: str) -> set[str]:
    return {month_partition(month_start(end)).name for end in request_id_window(request_id)}


def test_a_gateway_id_holds_a_window_around_the_time_it_was_made():
    before = datetime.now(UTC)
    window = request_id_window(new_request_id())

    assert window is not None
    assert window[0] <= before <= window[1]
    assert window[1] - window[0] == 2 * REQUEST_ID_SLACK


@pytest.mark.parametrize("request_id", [
    "req_" + "f" * 32,  # an older id: 32 random digits, a "time" in the year 10,889
    "req_00000000" + "a" * 24,  # an older id whose "time" is 1970
    _id_made_at(datetime.now(UTC) + timedelta(days=30)),  # from a month ahead: no clock is that far off
    "req-plan-1", "req_ABCDEF", "",
])
def test_an_id_that_holds_no_plausible_time_holds_no_window(request_id):
    assert request_id_window(request_id) is None


@pytest.mark.parametrize("months", [0, 1, 2, 5])
def test_a_row_is_found_by_its_id_in_any_month(org, key, make_log, months):
    row = _call(make_log, key, _months_ago(months))

    assert log_get(org=org, request_id=row.request_id).pk == row.pk
    assert [found.pk for found in log_rows(org=org, request_id=row.request_id)] == [row.pk]
    assert set(logged_calls([row.request_id])) == {row.request_id}


def test_a_row_at_the_edge_of_its_ids_window_is_found(org, key, make_log):
    made = _months_ago(1)
    row = make_log(key, request_id=_id_made_at(made), created=made + REQUEST_ID_SLACK - timedelta(seconds=1))

    assert log_get(org=org, request_id=row.request_id).pk == row.pk


def test_an_older_id_whose_digits_read_as_another_time_is_still_found(org, key, make_log, staff_client):
    """An id of the older shape may by chance hold a plausible time: its row is not in that window."""
    older_id = _id_made_at(_months_ago(2))
    row = _call(make_log, key, _months_ago(0), request_id=older_id)

    assert log_get(org=org, request_id=older_id).pk == row.pk
    assert [found.pk for found in log_rows(org=org, request_id=older_id)] == [row.pk]
    assert set(logged_calls([older_id, new_request_id()])) == {older_id}
    found = staff_client.get(reverse("admin:analytics_requestlog_changelist"), {"q": older_id})
    assert [listed.pk for listed in found.context["cl"].result_list] == [row.pk]


def test_an_older_id_of_another_org_is_not_found(org, other_org, other_key, make_log):
    row = _call(make_log, other_key, _months_ago(1), request_id="req_" + "e" * 32)

    assert list(log_rows(org=org, request_id=row.request_id)) == []


def _reads_of(request_id: str, run) -> list[str]:
    """The SELECTs ``run`` made that name the request id."""
    with CaptureQueriesContext(connection) as captured:
        run()
    return [query["sql"] for query in captured.captured_queries
            if request_id in query["sql"] and query["sql"].lstrip().upper().startswith("SELECT")]


def _page(client, path: str):
    def run():
        response = client.get(path)
        assert response.status_code == 200, (path, response.content[:300])
    return run


LOOKUPS = {
    "the API's log detail": lambda org, request_id, **_: _page(token_client(org), f"/api/v1/logs/{request_id}"),
    "the dashboard's call page": lambda owner_client, request_id, **_: _page(owner_client, f"/log/{request_id}/"),
    "the dashboard's side panel": lambda owner_client, request_id, **_: _page(owner_client,
                                                                             f"/log/{request_id}/panel/"),
    "the dashboard's search": lambda owner_client, request_id, **_: _page(owner_client,
                                                                         f"/log/?request_id={request_id}"),
    "the playground's replay": lambda owner_client, request_id, **_: _page(owner_client,
                                                                          f"/playground/?from={request_id}"),
    "the reaper's ledger lookup": lambda request_id, **_: lambda: logged_calls([request_id]),
}


@pytest.mark.postgres
@pytest.mark.parametrize("months", [0, 3])
@pytest.mark.parametrize("lookup", LOOKUPS)
def test_each_lookup_by_request_id_reads_only_its_windows_months(org, key, owner_client, make_log, lookup, months):
    row = _call(make_log, key, _months_ago(months))
    _call(make_log, key, _months_ago(months + 1))  # rows of other months, whose partitions are not read
    _call(make_log, key, _months_ago(months + 2))

    reads = _reads_of(row.request_id, LOOKUPS[lookup](org=org, owner_client=owner_client,
                                                     request_id=row.request_id))

    assert reads, f"{lookup} reads nothing by the request id: nothing to check"
    for sql in reads:
        assert _partitions_read(sql) == _window_partitions(row.request_id), (lookup, sql, plan_of(sql))


@pytest.mark.postgres
def test_the_admins_search_finds_the_id_by_its_window(key, make_log, staff_client):
    """The search ORs the id with a run id and a model in every org, which no window bounds: the
    id's own lookup reads its months, and the search holds the id within its window."""
    row = _call(make_log, key, _months_ago(2))
    _call(make_log, key, _months_ago(0))

    reads = _reads_of(row.request_id, lambda: staff_client.get(reverse("admin:analytics_requestlog_changelist"),
                                                               {"q": row.request_id}))

    assert _partitions_read(reads[0]) == _window_partitions(row.request_id), reads[0]
    assert all("BETWEEN" in sql for sql in reads[1:] if LOG_TABLE in sql), "\n".join(reads)


@pytest.mark.postgres
def test_the_check_catches_a_lookup_without_its_window(key, make_log):
    row = _call(make_log, key, _months_ago(0))
    _call(make_log, key, _months_ago(1))

    assert len(_partitions_read(f"SELECT id FROM analytics_requestlog WHERE request_id = '{row.request_id}'")) > 2
