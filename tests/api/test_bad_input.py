"""Input no row can match, in every path and query parameter that reaches a query: the same 404
as a missing object, or a 400 naming the parameter, in the API's error shape; never a 500."""

import base64
import json

import pytest

pytestmark = pytest.mark.django_db

BEYOND_BIGINT = "99999999999999999999"
NUL = "\x00"


def cursor_of(values) -> str:
    return base64.urlsafe_b64encode(json.dumps(values).encode()).decode().rstrip("=")


@pytest.mark.parametrize("method, path, missing", [
    ("get", "/api/v1/logs/%00", "/api/v1/logs/req-missing"),
    ("get", "/api/v1/logs/req%00x", "/api/v1/logs/req-missing"),
    ("get", "/api/v1/runs/%00x", "/api/v1/runs/missing"),
    ("get", "/api/v1/runs/crew/%00", "/api/v1/runs/missing"),
    ("get", "/api/v1/keys/%00", "/api/v1/keys/0"),
    ("get", f"/api/v1/keys/{BEYOND_BIGINT}", "/api/v1/keys/0"),
    ("patch", "/api/v1/keys/%00", "/api/v1/keys/0"),
    ("delete", f"/api/v1/keys/{BEYOND_BIGINT}", "/api/v1/keys/0"),
    ("post", "/api/v1/keys/%00/rotate", "/api/v1/keys/0/rotate"),
    ("get", "/api/v1/teams/%00", "/api/v1/teams/0"),
    ("delete", f"/api/v1/teams/{BEYOND_BIGINT}", "/api/v1/teams/0"),
    ("get", "/api/v1/budgets/%00", "/api/v1/budgets/0"),
    ("patch", f"/api/v1/budgets/{BEYOND_BIGINT}", "/api/v1/budgets/0"),
])
def test_an_id_no_row_can_have_gets_the_404_of_a_missing_object(api, log, method, path, missing):
    response = getattr(api, method)(path, format="json")

    assert response.status_code == 404
    assert response.json() == getattr(api, method)(missing, format="json").json()


@pytest.mark.parametrize("path, param", [
    ("/api/v1/logs?key=%00", "key"),
    ("/api/v1/logs?run=r%00", "run"),
    ("/api/v1/logs?since=yesterday", "since"),
    ("/api/v1/logs?cursor=%00", "cursor"),
    (f"/api/v1/logs?cursor={cursor_of('x')}", "cursor"),
    ("/api/v1/logs?status=abc", "status"),
    (f"/api/v1/teams?cursor={cursor_of([NUL, 1])}", "cursor"),
    (f"/api/v1/runs?key={BEYOND_BIGINT}x", "key"),
    ("/api/v1/spend?group_by=%00", "group_by"),
    ("/api/v1/spend?since=0001-01-01T00:00:00%2B14:00", "since"),
])
def test_a_bad_query_parameter_is_a_400_naming_it(api, log, path, param):
    response = api.get(path)

    assert response.status_code == 400
    assert response.json()["error"]["param"] == param
    assert response.json()["error"]["type"] == "invalid_request_error"


@pytest.mark.parametrize("query", ["since=9999-12-31T23:59:59Z", "until=9999-12-31T23:59:59Z"])
def test_spend_takes_a_window_that_ends_at_the_end_of_time(api, log, query):
    response = api.get(f"/api/v1/spend?{query}")

    assert response.status_code == 200


def test_a_key_filter_beyond_any_id_finds_nothing(api, log):
    response = api.get(f"/api/v1/logs?key={BEYOND_BIGINT}")

    assert (response.status_code, response.json()["results"]) == (200, [])


@pytest.mark.parametrize("field, value", [
    ("rpm_limit", 2**31),
    ("tpm_limit", 2**63),
    ("max_parallel", 2**64),
    ("metadata", {"owner": "a\x00b"}),
    ("metadata", {"a\x00b": "owner"}),
    ("metadata", {"owner": "\ud800"}),
    ("metadata", {"owner": json.loads("[" * 40 + "]" * 40)}),
    ("metadata", {"owner": json.loads("[" * 900 + "]" * 900)}),
])
def test_a_key_field_no_column_could_hold_is_a_400_naming_it(api, field, value):
    # ensure_ascii: a lone surrogate travels as its \ud800 escape, as a client would send it.
    response = api.post("/api/v1/keys", data=json.dumps({"name": "agent", field: value}),
                        content_type="application/json")

    assert response.status_code == 400
    assert response.json()["error"]["param"] == field


def test_a_body_nested_deeper_than_json_decoders_go_is_a_400(api):
    response = api.post("/api/v1/teams", data=b"[" * 100_000, content_type="application/json")

    assert response.status_code == 400
    assert response.json()["error"]["type"] == "invalid_request_error"
