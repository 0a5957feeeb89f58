"""/api/v1/logs: the request log, filtered and paged, and one call in full."""

from datetime import timedelta
from decimal import Decimal

import pytest
from django.utils import timezone

from analytics.serializers import log_row_dict
from dashboard.api.serializers import LogRowSerializer
from keys.services import virtual_key_create
from tests.analytics.factories import make_log

pytestmark = pytest.mark.django_db

CONTRACT_ROW_FIELDS = {"request_id", "run_id", "endpoint", "key", "model", "deployment", "provider", "status",
                       "attempts", "latency_ms", "ttft_ms", "prompt_tokens", "completion_tokens", "cached_tokens",
                       "cost", "finish_reason", "tool_calls", "cache", "created"}


@pytest.fixture
def second_key(org, system_actor):
    key, _ = virtual_key_create(org=org, name="writer", actor=system_actor)
    return key


def _ids(response) -> list[str]:
    return [row["request_id"] for row in response.json()["results"]]


def test_it_lists_the_calls_of_the_org_newest_first(admin_api, key, other_key):
    older, newer = make_log(key.org, key), make_log(key.org, key)
    make_log(other_key.org, other_key)

    response = admin_api.get("/api/v1/logs")

    assert response.status_code == 200
    assert _ids(response) == [newer.request_id, older.request_id]
    assert response.json()["next"] is None


def test_a_log_row_has_the_contract_fields(api, key):
    attempts = [{"deployment": "flash-vertex", "outcome": "ok", "latency_ms": 420}]
    make_log(key.org, key, tool_calls=[{"name": "search", "arguments": "{\"q\": \"x\"}"}], attempts=attempts,
             cost=Decimal("0.001110"))

    row = api.get("/api/v1/logs").json()["results"][0]

    assert CONTRACT_ROW_FIELDS <= set(row)
    assert (row["key"], row["cost"], row["tool_calls"][0]["name"]) == (key.prefix, "0.001110", "search")
    assert row["attempts"] == attempts


def test_the_schema_documents_every_field_of_a_log_row(key):
    documented = set(LogRowSerializer().fields)

    assert documented == set(log_row_dict(make_log(key.org, key)))


def test_it_filters_by_key_id(api, key, second_key):
    wanted = make_log(second_key.org, second_key)
    make_log(key.org, key)

    assert _ids(api.get("/api/v1/logs", {"key": second_key.pk})) == [wanted.request_id]


@pytest.mark.parametrize("written", ["{prefix}", "sk-nemo-{prefix}"])
def test_it_filters_by_key_prefix(api, key, second_key, written):
    wanted = make_log(second_key.org, second_key)
    make_log(key.org, key)

    response = api.get("/api/v1/logs", {"key": written.format(prefix=second_key.prefix)})

    assert _ids(response) == [wanted.request_id]


@pytest.mark.parametrize(("param", "field", "value"), [
    ("run", "run_id", "run-7"),
    ("model", "model", "claude-sonnet-4"),
    ("deployment", "deployment", "flash-backup"),
    ("status", "status", 502),
    ("cache", "cache", "hit"),
])
def test_it_filters_by_each_field(api, key, param, field, value):
    wanted = make_log(key.org, key, **{field: value})
    make_log(key.org, key)

    assert _ids(api.get("/api/v1/logs", {param: value})) == [wanted.request_id]


def test_it_filters_by_tag_exactly_within_the_org(api, key, other_key):
    tagged = make_log(key.org, key, tags=["eu", "customer:acme"])
    make_log(key.org, key, tags=["eu", "customer:acme-2"])
    make_log(key.org, key)
    make_log(other_key.org, other_key, tags=["customer:acme"])

    assert _ids(api.get("/api/v1/logs", {"tag": "customer:acme"})) == [tagged.request_id]
    assert len(_ids(api.get("/api/v1/logs", {"tag": "eu"}))) == 2
    assert api.get("/api/v1/logs", {"tag": "customer:acme"}).json()["results"][0]["tags"] == ["eu", "customer:acme"]


def test_it_filters_by_time(api, key):
    now = timezone.now()
    make_log(key.org, key, created=now - timedelta(days=3))
    wanted = make_log(key.org, key, created=now - timedelta(days=1))
    make_log(key.org, key, created=now - timedelta(minutes=1))

    response = api.get("/api/v1/logs", {"since": (now - timedelta(days=2)).isoformat(),
                                             "until": (now - timedelta(hours=1)).isoformat()})

    assert _ids(response) == [wanted.request_id]


def test_it_pages_through_the_log_with_a_cursor(api, key):
    made = [make_log(key.org, key).request_id for _ in range(5)]

    first = api.get("/api/v1/logs", {"limit": 2}).json()
    second = api.get("/api/v1/logs", {"limit": 2, "cursor": first["next"]}).json()
    third = api.get("/api/v1/logs", {"limit": 2, "cursor": second["next"]}).json()

    seen = [row["request_id"] for page in (first, second, third) for row in page["results"]]
    assert seen == list(reversed(made))
    assert third["next"] is None


def test_a_cursor_keeps_the_filters_it_is_used_with(api, key):
    made = [make_log(key.org, key, model="m1").request_id for _ in range(3)]
    make_log(key.org, key, model="m2")

    first = api.get("/api/v1/logs", {"limit": 2, "model": "m1"}).json()
    second = api.get("/api/v1/logs", {"limit": 2, "model": "m1", "cursor": first["next"]}).json()

    assert [row["request_id"] for row in second["results"]] == [made[0]]


@pytest.mark.parametrize(("params", "param"), [
    ({"since": "yesterday"}, "since"),
    ({"until": "2025-13-45"}, "until"),
    ({"cursor": "garbage!"}, "cursor"),
    ({"cursor": "MjAyNXwx"}, "cursor"),
    ({"status": "ok"}, "status"),
    ({"status": 42}, "status"),
    ({"cache": "maybe"}, "cache"),
    ({"limit": 0}, "limit"),
    ({"limit": 1000}, "limit"),
    ({"tag": "x" * 201}, "tag"),
    ({"tag": "eu\x00"}, "tag"),
])
def test_it_refuses_a_bad_query(api, key, params, param):
    response = api.get("/api/v1/logs", params)

    assert response.status_code == 400
    assert (response.json()["error"]["type"], response.json()["error"]["param"]) == ("invalid_request_error", param)


def test_it_shows_one_call_with_its_attempts(admin_api, key):
    attempts = [{"deployment": "flash-vertex", "outcome": "timeout", "latency_ms": 30000},
                {"deployment": "flash-backup", "outcome": "ok", "latency_ms": 800}]
    row = make_log(key.org, key, attempts=attempts, deployment="flash-backup", cost=Decimal("0.002000"))

    body = admin_api.get(f"/api/v1/logs/{row.request_id}").json()

    assert (body["request_id"], body["attempts"], body["cost"]) == (row.request_id, attempts, "0.002000")
    assert (body["request_body"], body["response_body"]) == (None, None)


def test_one_call_shows_its_bodies_when_they_were_stored(api, key):
    request_body = {"model": "gemini-2.5-flash", "messages": [{"role": "user", "content": "hi"}]}
    response_body = {"choices": [{"message": {"role": "assistant", "content": "hello"}}]}
    row = make_log(key.org, key, request_body=request_body, response_body=response_body)

    body = api.get(f"/api/v1/logs/{row.request_id}").json()

    assert (body["request_body"], body["response_body"]) == (request_body, response_body)


def test_a_call_that_cost_more_than_it_reserved_shows_by_how_much(api, key):
    make_log(key.org, key, cost=Decimal("0.009000"), overshoot=Decimal("0.001500"))

    row = api.get("/api/v1/logs").json()["results"][0]

    assert (row["cost"], row["overshoot"]) == ("0.009000", "0.001500")
