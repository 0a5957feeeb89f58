"""The log, runs and spend as the dashboard and the API read them."""

import base64
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from django.http import Http404

from analytics.selectors import (
    KeyTotals,
    log_get,
    log_list,
    run_get,
    run_list,
    settled_spend_micros,
    spend_rows,
    spend_total,
    use_by_key,
)
from keys.services import team_create
from tests.analytics.factories import make_key, make_log

pytestmark = pytest.mark.django_db

NOON = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)
FALLBACK = [
    {"deployment": "flash-vertex", "outcome": "timeout", "latency_ms": 30000},
    {"deployment": "flash-backup", "outcome": "ok", "latency_ms": 400},
]


def all_pages(**filters) -> list[int]:
    page = log_list(**filters)
    seen = [row.pk for row in page.rows]
    while page.next_cursor and len(seen) < 1000:
        page = log_list(cursor=page.next_cursor, **filters)
        seen += [row.pk for row in page.rows]
    return seen


def test_log_list_is_newest_first(org, key):
    older = make_log(org, key, created=NOON)
    newer = make_log(org, key, created=NOON + timedelta(seconds=1))

    page = log_list(org=org)

    assert [row.pk for row in page.rows] == [newer.pk, older.pk]
    assert page.next_cursor is None


def test_cursor_pages_through_equal_timestamps_with_no_row_twice_and_none_skipped(org, key):
    rows = [make_log(org, key, created=NOON) for _ in range(23)]
    rows += [make_log(org, key, created=NOON - timedelta(seconds=1)) for _ in range(4)]

    seen = all_pages(org=org, limit=5)

    assert len(seen) == len(set(seen)) == 27
    assert seen == [row.pk for row in sorted(rows, key=lambda row: (row.created, row.pk), reverse=True)]


def test_rows_written_after_the_first_page_do_not_shift_the_next_pages(org, key):
    rows = [make_log(org, key, created=NOON) for _ in range(6)]
    first = log_list(org=org, limit=3)
    make_log(org, key, created=NOON + timedelta(minutes=1))

    second = log_list(org=org, limit=3, cursor=first.next_cursor)

    assert [row.pk for row in first.rows + second.rows] == [row.pk for row in reversed(rows)]


@pytest.mark.parametrize("filters, expected", [
    ({"model": "gpt-4o"}, "other-model"),
    ({"deployment": "flash-backup"}, "other-deployment"),
    ({"status": 502}, "failed"),
    ({"cache": "hit"}, "cached"),
    ({"run": "run-7"}, "in-run"),
    ({"since": NOON + timedelta(hours=1), "until": NOON + timedelta(hours=2)}, "later"),
])
def test_log_list_filters_by_what_the_product_asks(org, key, filters, expected):
    make_log(org, key, request_id="plain", created=NOON)
    make_log(org, key, request_id="other-model", model="gpt-4o", created=NOON)
    make_log(org, key, request_id="other-deployment", deployment="flash-backup", created=NOON)
    make_log(org, key, request_id="failed", status=502, created=NOON)
    make_log(org, key, request_id="cached", cache="hit", created=NOON)
    make_log(org, key, request_id="in-run", run_id="run-7", created=NOON)
    make_log(org, key, request_id="later", created=NOON + timedelta(hours=1))

    page = log_list(org=org, **filters)

    assert [row.request_id for row in page.rows] == [expected]


def test_log_list_filters_by_key_id_and_by_key_prefix(org, key):
    other = make_key(org, "reviewer")
    mine = make_log(org, key)
    make_log(org, other)

    assert [row.pk for row in log_list(org=org, key_id=key.pk).rows] == [mine.pk]
    assert [row.pk for row in log_list(org=org, key_prefix=key.prefix).rows] == [mine.pk]


@pytest.mark.parametrize("cursor", [
    "not base64 at all!",
    base64.urlsafe_b64encode(b"yesterday|12").decode(),
    base64.urlsafe_b64encode(b"2026-03-10T12:00:00|12").decode(),
    base64.urlsafe_b64encode(b"2026-03-10T12:00:00+00:00").decode(),
    base64.urlsafe_b64encode(b"2026-03-10T12:00:00+00:00|twelve").decode(),
])
def test_a_malformed_cursor_is_a_value_error(org, cursor):
    with pytest.raises(ValueError):
        log_list(org=org, cursor=cursor)


def test_log_get_finds_a_call_by_request_id(org, key):
    row = make_log(org, key, request_id="req-abc")

    assert log_get(org=org, request_id="req-abc") == row


def test_log_get_of_a_missing_call_is_404(org):
    with pytest.raises(Http404):
        log_get(org=org, request_id="req-nope")


def make_agent_run(org, key, run_id="run-24") -> list:
    """24 steps, the 11th fell back, every step called a tool."""
    return [
        make_log(
            org, key, run_id=run_id, created=NOON + timedelta(seconds=step),
            attempts=FALLBACK if step == 11 else [{"deployment": "flash-vertex", "outcome": "ok", "latency_ms": 200}],
            deployment="flash-backup" if step == 11 else "flash-vertex",
            tool_calls=[{"name": "search", "arguments": f'{{"step": {step}}}'}],
            cost=Decimal("0.001000"),
        )
        for step in range(1, 25)
    ]


def test_a_24_step_run_is_replayed_whole_with_its_fallback_and_tool_calls(org, key):
    steps = make_agent_run(org, key)

    run = run_get(org=org, run_id="run-24")

    assert [step.pk for step in run.steps] == [step.pk for step in steps]
    assert run.steps_count == 24
    assert run.fallback_steps == [11]
    assert run.tool_calls_logged == 24
    assert run.status == "completed"
    assert run.spend == Decimal("0.024000")
    assert run.key == key
    assert (run.first, run.last) == (steps[0].created, steps[-1].created)


def test_a_run_whose_last_step_failed_is_failed(org, key):
    make_log(org, key, run_id="run-x", created=NOON)
    make_log(org, key, run_id="run-x", status=502, created=NOON + timedelta(seconds=1))

    assert run_get(org=org, run_id="run-x").status == "failed"


def test_steps_with_the_same_timestamp_keep_the_order_they_were_written(org, key):
    steps = [make_log(org, key, run_id="run-y", created=NOON) for _ in range(5)]

    assert [step.pk for step in run_get(org=org, run_id="run-y").steps] == [step.pk for step in steps]


def test_a_run_without_rows_is_404(org):
    with pytest.raises(Http404):
        run_get(org=org, run_id="run-none")


def test_run_list_shows_the_most_recently_active_runs_first(org, key):
    make_log(org, key, run_id="early", created=NOON, cost=Decimal("0.2"))
    make_log(org, key, run_id="late", created=NOON + timedelta(minutes=1), cost=Decimal("0.1"))
    make_log(org, key, run_id="early", created=NOON + timedelta(minutes=2), status=500, cost=Decimal("0.3"))
    make_log(org, key, created=NOON + timedelta(minutes=3))

    runs = run_list(org=org)

    assert [(run.run_id, run.steps_count, run.spend, run.status) for run in runs] == [
        ("early", 2, Decimal("0.500000"), "failed"),
        ("late", 1, Decimal("0.100000"), "completed"),
    ]
    assert (runs[0].started, runs[0].ended, runs[0].key_prefix) == (NOON, NOON + timedelta(minutes=2), key.prefix)


def test_run_list_of_one_key_leaves_out_the_other_keys_runs(org, key):
    other = make_key(org, "reviewer")
    make_log(org, key, run_id="mine")
    make_log(org, other, run_id="theirs")

    assert [run.run_id for run in run_list(org=org, key_id=key.pk)] == ["mine"]


def make_spend(org, key, team):
    bare = make_key(org, "bare")
    make_log(org, key, created=NOON, model="gpt-4o", cost=Decimal("0.300000"), prompt_tokens=10, completion_tokens=1)
    make_log(org, key, created=NOON, cost=Decimal("0.100000"), prompt_tokens=20, completion_tokens=2)
    make_log(org, bare, created=NOON + timedelta(days=1), cost=Decimal("0.050000"), prompt_tokens=40,
             completion_tokens=4)
    return bare


@pytest.mark.parametrize("group_by, groups", [
    ("day", [("2026-03-10", "0.400000", 2, 30, 3), ("2026-03-11", "0.050000", 1, 40, 4)]),
    ("model", [("gpt-4o", "0.300000", 1, 10, 1), ("gemini-2.5-flash", "0.150000", 2, 60, 6)]),
    ("team", [("research", "0.400000", 2, 30, 3), ("(no team)", "0.050000", 1, 40, 4)]),
])
def test_spend_rows_group_calls_and_tokens(org, key, team, group_by, groups):
    make_spend(org, key, team)

    rows = spend_rows(org=org, group_by=group_by)

    assert rows == [
        {"group": group, "cost": Decimal(cost), "calls": calls, "prompt_tokens": prompt,
         "completion_tokens": completion}
        for group, cost, calls, prompt, completion in groups
    ]


def test_spend_rows_by_key_name_the_key_and_its_prefix(org, key, team):
    bare = make_spend(org, key, team)

    rows = spend_rows(org=org, group_by="key")

    assert [(row["group"], row["cost"]) for row in rows] == [
        (f"planner ({key.prefix})", Decimal("0.400000")),
        (f"bare ({bare.prefix})", Decimal("0.050000")),
    ]


def test_spend_rows_keep_to_the_window(org, key, team):
    make_spend(org, key, team)

    rows = spend_rows(org=org, group_by="day", since=NOON + timedelta(hours=12), until=NOON + timedelta(days=2))

    assert [row["group"] for row in rows] == ["2026-03-11"]


def test_spend_rows_refuse_an_unknown_grouping(org):
    with pytest.raises(ValueError):
        spend_rows(org=org, group_by="week")


def test_spend_total_counts_only_rows_from_then_on(org, key):
    make_log(org, key, cost=Decimal("1"), created=datetime(2026, 10, 31, 23, 59, tzinfo=UTC))
    make_log(org, key, cost=Decimal("2"), created=datetime(2026, 11, 1, tzinfo=UTC))
    assert spend_total(org_id=org.pk, since=datetime(2026, 11, 1, tzinfo=UTC)) == Decimal("2")


def test_settled_spend_is_counted_in_micro_dollars_per_key_team_or_org(org, key, team):
    loner = make_key(org, "loner")
    make_log(org, key, cost=Decimal("0.000125"))
    make_log(org, loner, cost=Decimal("1.5"))
    make_log(org, key, cost=Decimal("4"), created=datetime(2020, 1, 1, tzinfo=UTC))
    since = datetime(2021, 1, 1, tzinfo=UTC)

    assert {
        "org": settled_spend_micros(org_id=org.pk, since=None),
        "org since 2021": settled_spend_micros(org_id=org.pk, since=since),
        "key since 2021": settled_spend_micros(org_id=org.pk, since=since, key_id=loner.pk),
        "team": settled_spend_micros(org_id=org.pk, since=None, team_id=team.pk),
    } == {"org": 5_500_125, "org since 2021": 1_500_125, "key since 2021": 1_500_000, "team": 4_000_125}


def test_use_by_key_counts_each_keys_spend_since_then_and_zero_for_a_key_without_calls(org, key):
    idle = make_key(org, "idle")
    make_log(org, key, cost=Decimal("0.2"), created=datetime(2026, 11, 2, tzinfo=UTC))
    make_log(org, key, cost=Decimal("0.7"), created=datetime(2026, 10, 30, tzinfo=UTC))

    used = use_by_key(org=org, key_ids=[key.pk, idle.pk], since=datetime(2026, 11, 1, tzinfo=UTC))

    assert {key_id: totals.cost for key_id, totals in used.items()} == {key.pk: Decimal("0.200000"),
                                                                         idle.pk: Decimal("0")}


def test_the_log_of_one_org_is_invisible_to_another(org, key, other_org, system_actor):
    make_log(org, key, request_id="secret-call", run_id="secret-run")
    team_create(org=other_org, name="research", actor=system_actor)

    assert log_list(org=other_org).rows == []
    assert log_list(org=other_org, key_id=key.pk, run="secret-run").rows == []
    with pytest.raises(Http404):
        log_get(org=other_org, request_id="secret-call")
    with pytest.raises(Http404):
        run_get(org=other_org, run_id="secret-run")
    assert run_list(org=other_org) == []
    assert [spend_rows(org=other_org, group_by=group) for group in ("day", "key", "team", "model")] == [[]] * 4
    assert {key_id: totals for key_id, totals in use_by_key(org=other_org, key_ids=[key.pk], since=None).items()} \
        == {key.pk: KeyTotals(cost=Decimal("0"), calls=0, errors=0)}
