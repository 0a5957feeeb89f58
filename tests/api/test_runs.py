"""/api/v1/runs: agent runs (calls sharing an X-Nemo-Run), as the run card shows them."""

from decimal import Decimal

import pytest

from billing.services import budget_set
from keys.services import virtual_key_create
from tests.analytics.factories import make_log

pytestmark = pytest.mark.django_db

FALLBACK = [{"deployment": "flash-vertex", "outcome": "timeout", "latency_ms": 30000},
            {"deployment": "flash-backup", "outcome": "ok", "latency_ms": 700}]
SEARCH = [{"name": "search", "arguments": "{}"}]


@pytest.fixture
def run_steps(org, key, system_actor) -> list:
    budget_set(org=org, key=key, amount="5.00", actor=system_actor)
    return [
        make_log(key.org, key, run_id="agent-run", tool_calls=SEARCH, cost=Decimal("0.100000")),
        make_log(key.org, key, run_id="agent-run", attempts=FALLBACK, cost=Decimal("0.200000")),
        make_log(key.org, key, run_id="agent-run", tool_calls=SEARCH, cost=Decimal("0.300000")),
    ]


def test_it_shows_a_run_as_the_run_card_does(admin_api, key, run_steps):
    body = admin_api.get("/api/v1/runs/agent-run").json()

    assert (body["run_id"], body["key"], body["key_id"]) == ("agent-run", key.prefix, key.pk)
    assert [step["request_id"] for step in body["steps"]] == [step.request_id for step in run_steps]
    assert (body["steps_count"], body["fallback_steps"], body["status"]) == (3, [2], "completed")
    assert (body["spend"], body["budget"], body["budget_period"]) == ("0.600000", "5.000000", "none")
    assert body["tool_calls_logged"] == 2


def test_a_run_whose_last_call_failed_has_failed(api, key):
    make_log(key.org, key, run_id="agent-run")
    make_log(key.org, key, run_id="agent-run", status=502)

    assert api.get("/api/v1/runs/agent-run").json()["status"] == "failed"


def test_a_run_of_a_key_without_a_budget_has_none(api, key):
    make_log(key.org, key, run_id="agent-run")

    assert api.get("/api/v1/runs/agent-run").json()["budget"] is None


def test_a_run_id_may_hold_slashes(api, key):
    make_log(key.org, key, run_id="crew/planner/42")

    assert api.get("/api/v1/runs/crew/planner/42").json()["steps_count"] == 1


def test_it_lists_the_recent_runs_newest_first(admin_api, key, other_key):
    make_log(key.org, key, run_id="first", cost=Decimal("0.1"))
    make_log(key.org, key, run_id="second", cost=Decimal("0.5"))
    make_log(key.org, key, run_id="second", cost=Decimal("0.25"))
    make_log(other_key.org, other_key, run_id="theirs")

    results = admin_api.get("/api/v1/runs").json()["results"]

    assert [(run["run_id"], run["steps_count"], run["spend"]) for run in results] == [
        ("second", 2, "0.750000"), ("first", 1, "0.100000")]
    assert results[0]["key"] == key.prefix


def test_it_lists_the_runs_of_one_key(api, org, key, system_actor):
    writer, _ = virtual_key_create(org=org, name="writer", actor=system_actor)
    make_log(key.org, key, run_id="research")
    make_log(writer.org, writer, run_id="writing")

    results = api.get("/api/v1/runs", {"key": writer.pk}).json()["results"]

    assert [run["run_id"] for run in results] == ["writing"]


@pytest.mark.parametrize(("params", "param"), [({"key": "abc"}, "key"), ({"limit": -1}, "limit")])
def test_it_refuses_a_bad_run_query(api, params, param):
    response = api.get("/api/v1/runs", params)

    assert response.status_code == 400
    assert response.json()["error"]["param"] == param


def test_a_run_stopped_by_its_envelope_shows_the_envelope_and_why(api, key):
    make_log(key.org, key, run_id="agent-run", cost=Decimal("0.400000"), run_budget=Decimal("0.500000"))
    make_log(key.org, key, run_id="agent-run", status=402, run_budget=Decimal("0.500000"), cost=Decimal("0"),
             error="This call may cost up to $0.2, which does not fit the run's envelope",
             error_type="budget_exceeded", error_code="budget_exceeded", error_param="run")

    body = api.get("/api/v1/runs/agent-run").json()

    assert (body["run_budget"], body["spend"], body["stopped_by"]) == ("0.500000", "0.400000", "run_budget")
    assert "run's envelope" in body["stop_reason"]


def test_a_run_stopped_by_the_loop_guard_says_so(api, key):
    make_log(key.org, key, run_id="agent-run", tool_calls=SEARCH)
    make_log(key.org, key, run_id="agent-run", status=429, error="asked for the same tool call 3 times",
             error_type="rate_limit_error", error_code="run_loop_detected", error_param="run")

    body = api.get("/api/v1/runs/agent-run").json()

    assert (body["run_budget"], body["stopped_by"]) == (None, "loop_guard")


def test_a_run_nothing_stopped_has_no_stop(api, key):
    make_log(key.org, key, run_id="agent-run", status=402, error_code="budget_exceeded", error_param="key")

    body = api.get("/api/v1/runs/agent-run").json()

    assert (body["stopped_by"], body["stop_reason"]) == (None, "")
