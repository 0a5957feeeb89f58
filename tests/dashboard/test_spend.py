import csv
import io
import json
import re
from datetime import timedelta
from decimal import Decimal

import pytest
from django.utils import timezone

from keys.services import team_create, virtual_key_create

pytestmark = pytest.mark.django_db


def _chart_data(response) -> dict:
    found = re.search(r'<script id="spend-data" type="application/json">(.*?)</script>', response.content.decode(),
                      re.S)
    return json.loads(found.group(1))


@pytest.fixture
def spent(org, system_actor, make_log):
    team = team_create(org=org, name="research", actor=system_actor)
    key, _ = virtual_key_create(org=org, name="researcher", team=team, actor=system_actor)
    # Both in the same second, so they are on the same day even just after midnight.
    moment = timezone.now()
    make_log(key, model="gemini-2.5-pro", cost=Decimal("1.50"), created=moment)
    make_log(key, model="gemini-2.5-flash", cost=Decimal("0.25"), created=moment)
    return moment


def test_the_page_has_a_chart_for_each_grouping(owner_client, spent):
    page = owner_client.get("/spend/").content.decode()

    for group in ("day", "key", "team", "model"):
        assert f'<canvas id="chart-{group}"' in page
    assert "/static/vendor/chartjs/chart.umd.min.js" in page


def _costs_by_day(data: dict) -> dict:
    return {row["group"]: Decimal(row["cost"]) for row in data["day"] if Decimal(row["cost"])}


def test_the_chart_data_is_in_the_page_as_json(owner_client, spent):
    data = _chart_data(owner_client.get("/spend/"))

    assert _costs_by_day(data) == {spent.date().isoformat(): Decimal("1.75")}
    assert {row["group"]: Decimal(row["cost"]) for row in data["model"]} == {
        "gemini-2.5-pro": Decimal("1.50"), "gemini-2.5-flash": Decimal("0.25")}
    assert [row["group"] for row in data["team"]] == ["research"]
    assert data["key"][0]["group"].startswith("researcher")


def test_the_chart_data_leaves_out_other_orgs(owner_client, spent, other_key, make_log):
    make_log(other_key, model="claude-sonnet-4", cost=Decimal("9.00"), created=spent)

    data = _chart_data(owner_client.get("/spend/"))

    assert _costs_by_day(data) == {spent.date().isoformat(): Decimal("1.75")}
    assert "claude-sonnet-4" not in [row["group"] for row in data["model"]]


def test_the_day_chart_shows_every_day_of_the_range_quiet_ones_at_zero(owner_client, spent):
    data = _chart_data(owner_client.get("/spend/?since=2025-03-01&until=2025-03-07"))

    assert [row["group"] for row in data["day"]] == [f"2025-03-0{day}" for day in range(1, 8)]
    assert {row["cost"] for row in data["day"]} == {"0"}


def test_the_range_leaves_out_older_days(owner_client, key, make_log):
    now = timezone.now()
    make_log(key, cost=Decimal("3.00"), created=now - timedelta(days=10))
    make_log(key, cost=Decimal("0.50"), created=now)
    since = (now - timedelta(days=2)).date().isoformat()

    response = owner_client.get(f"/spend/?since={since}")

    assert _costs_by_day(_chart_data(response)) == {now.date().isoformat(): Decimal("0.50")}
    assert "$0.50" in response.content.decode()


def test_a_bad_range_is_a_400_not_a_500(owner_client):
    assert owner_client.get("/spend/?since=last-tuesday").status_code == 400
    assert owner_client.get("/spend/?since=2025-05-02&until=2025-05-01").status_code == 400


def test_the_csv_export_has_a_row_per_group(owner_client, spent):
    response = owner_client.get("/spend.csv?group_by=model")

    assert response["Content-Type"].startswith("text/csv")
    assert "attachment" in response["Content-Disposition"]
    rows = list(csv.reader(io.StringIO(response.content.decode())))
    assert rows[0] == ["group", "cost", "calls", "prompt_tokens", "completion_tokens"]
    assert sorted(rows[1:]) == [["gemini-2.5-flash", "0.250000", "1", "1200", "300"],
                                ["gemini-2.5-pro", "1.500000", "1", "1200", "300"]]


def test_the_csv_export_groups_by_day_by_default(owner_client, spent):
    rows = list(csv.reader(io.StringIO(owner_client.get("/spend.csv").content.decode())))

    assert rows[1][0] == spent.date().isoformat()


def test_the_csv_export_keeps_spreadsheets_from_running_names_as_formulas(owner_client, org, system_actor, make_log):
    key, _ = virtual_key_create(org=org, name="=HYPERLINK(\"http://evil\")", actor=system_actor)
    make_log(key)

    text = owner_client.get("/spend.csv?group_by=key").content.decode()

    assert "'=HYPERLINK" in text


def test_a_bad_grouping_for_the_csv_is_a_400(owner_client):
    assert owner_client.get("/spend.csv?group_by=planet").status_code == 400


def test_a_member_reads_spend(member_client, spent):
    assert member_client.get("/spend/").status_code == 200
    assert member_client.get("/spend.csv").status_code == 200


def test_an_outsider_exports_only_their_own_spend(outsider_client, spent):
    rows = list(csv.reader(io.StringIO(outsider_client.get("/spend.csv?group_by=model").content.decode())))

    assert rows == [["group", "cost", "calls", "prompt_tokens", "completion_tokens"]]


@pytest.mark.parametrize("path", ["/spend/?until=9999-12-31", "/spend.csv?until=9999-12-31",
                                  "/spend/?since=9999-12-31"])
def test_a_range_to_the_end_of_the_calendar_is_shown(owner_client, spent, path):
    assert owner_client.get(path).status_code == 200


def test_calls_to_unknown_models_are_one_row_named_so(owner_client, spent, key, make_log):
    for model in ("gpt-9", "gpt-9", "claude-opus-99"):
        make_log(key, model=model, status=404, cost=Decimal("0"), deployment="", provider="", attempts=[])
    make_log(key, model="", status=400, cost=Decimal("0"), deployment="", provider="", attempts=[])

    response = owner_client.get("/spend/")

    by_model = {row["group"]: row["calls"] for row in _chart_data(response)["model"]}
    assert by_model == {"gemini-2.5-pro": 1, "gemini-2.5-flash": 1,
                        "unknown models (claude-opus-99, gpt-9)": 3, "no model named": 1}
    assert "(none)" not in response.content.decode()


def test_the_favicon_is_served(client):
    response = client.get("/favicon.ico")

    assert response.status_code == 200 and response["Content-Type"] == "image/x-icon"
    assert response.content[:4] == b"\x00\x00\x01\x00"
