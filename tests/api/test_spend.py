"""/api/v1/spend: spend grouped by day, key, team or model, as JSON or CSV."""

from datetime import timedelta
from decimal import Decimal

import pytest
from django.utils import timezone

from tests.analytics.factories import make_log

pytestmark = pytest.mark.django_db


@pytest.fixture
def calls(key, other_key) -> None:
    """Two days ago one call; today (now, so the day cannot change under the test) three more."""
    now = timezone.now()
    tokens = {"prompt_tokens": 1200, "completion_tokens": 300}
    make_log(key.org, key, model="gemini-2.5-flash", cost=Decimal("0.1"), created=now - timedelta(days=2), **tokens)
    make_log(key.org, key, model="gemini-2.5-flash", cost=Decimal("0.2"), created=now, **tokens)
    make_log(key.org, key, model="gemini-2.5-pro", cost=Decimal("1.0"), created=now, **tokens)
    make_log(other_key.org, other_key, model="gemini-2.5-pro", cost=Decimal("9.0"), created=now, **tokens)


def test_it_groups_spend_by_model(admin_api, calls):
    response = admin_api.get("/api/v1/spend", {"group_by": "model"})

    assert response.status_code == 200
    assert response.json()["results"] == [
        {"group": "gemini-2.5-pro", "cost": "1.000000", "calls": 1, "prompt_tokens": 1200, "completion_tokens": 300},
        {"group": "gemini-2.5-flash", "cost": "0.300000", "calls": 2, "prompt_tokens": 2400,
         "completion_tokens": 600},
    ]


def test_it_groups_spend_by_day_by_default(api, calls):
    rows = api.get("/api/v1/spend").json()["results"]

    assert [row["cost"] for row in rows] == ["0.100000", "1.200000"]


def test_it_groups_spend_by_key_and_by_team(api, calls, key, team):
    by_key = api.get("/api/v1/spend", {"group_by": "key"}).json()["results"]
    by_team = api.get("/api/v1/spend", {"group_by": "team"}).json()["results"]

    assert [(row["group"], row["cost"]) for row in by_key] == [(f"researcher ({key.prefix})", "1.300000")]
    assert [(row["group"], row["cost"]) for row in by_team] == [("research", "1.300000")]


def test_it_counts_spend_in_a_window(api, calls):
    since = (timezone.now() - timedelta(days=1)).isoformat()

    rows = api.get("/api/v1/spend", {"group_by": "model", "since": since}).json()["results"]

    assert [(row["group"], row["cost"]) for row in rows] == [("gemini-2.5-pro", "1.000000"),
                                                             ("gemini-2.5-flash", "0.200000")]


def test_it_exports_spend_as_csv(api, calls):
    response = api.get("/api/v1/spend", {"group_by": "model", "format": "csv"})

    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/csv")
    assert "attachment" in response["Content-Disposition"]
    assert response.content.decode().splitlines() == [
        "group,cost,calls,prompt_tokens,completion_tokens",
        "gemini-2.5-pro,1.000000,1,1200,300",
        "gemini-2.5-flash,0.300000,2,2400,600",
    ]


def test_asking_for_csv_in_the_accept_header_works_too(api, calls):
    response = api.get("/api/v1/spend", {"group_by": "model"}, HTTP_ACCEPT="text/csv")

    assert response.content.decode().startswith("group,cost,calls")


@pytest.mark.parametrize(("params", "param"), [
    ({"group_by": "week"}, "group_by"),
    ({"since": "last month"}, "since"),
    ({"until": "soon"}, "until"),
])
def test_it_refuses_a_bad_query(api, params, param):
    response = api.get("/api/v1/spend", params)

    assert response.status_code == 400
    assert response.json()["error"]["param"] == param


def test_a_bad_csv_query_gets_a_json_error(api):
    response = api.get("/api/v1/spend", {"group_by": "week", "format": "csv"})

    assert response.status_code == 400
    assert response["Content-Type"] == "application/json"
    assert response.json()["error"]["param"] == "group_by"
