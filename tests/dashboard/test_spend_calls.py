"""The spend page beside its cost: tokens, calls and latency, each day's spend stacked by model,
and a CSV of the range's calls, one row each; never another org's."""

import csv
import io
import json
import re
from datetime import timedelta
from decimal import Decimal

import pytest
from asgiref.sync import async_to_sync
from django.utils import timezone

from keys.services import virtual_key_create

pytestmark = pytest.mark.django_db


def _chart_data(response) -> dict:
    found = re.search(r'<script id="spend-data" type="application/json">(.*?)</script>', response.content.decode(),
                      re.S)
    return json.loads(found.group(1))


def _calls_csv(client, **params) -> list[list[str]]:
    response = client.get("/spend/calls.csv", params)
    assert response.status_code == 200 and response["Content-Type"].startswith("text/csv")
    assert "attachment" in response["Content-Disposition"]
    # An asynchronous stream (what ASGI serves as it is read), read here the same way.
    return list(csv.reader(io.StringIO(async_to_sync(_read)(response.streaming_content).decode())))


async def _read(parts) -> bytes:
    return b"".join([part async for part in parts])


@pytest.fixture
def spent(key, make_log):
    now = timezone.now()
    yesterday = now - timedelta(days=1)
    return {
        "pro": make_log(key, request_id="req-pro", model="gemini-2.5-pro", cost=Decimal("1.500000"), created=yesterday,
                        latency_ms=800, prompt_tokens=100, completion_tokens=50, tags=["customer:acme"]),
        "flash": make_log(key, request_id="req-flash", model="gemini-2.5-flash", cost=Decimal("0.250000"),
                          created=now, latency_ms=200, prompt_tokens=10, completion_tokens=5),
        "flash-yesterday": make_log(key, request_id="req-flash-2", model="gemini-2.5-flash", cost=Decimal("0.000055"),
                                    created=yesterday, latency_ms=400, prompt_tokens=1, completion_tokens=1),
    }


def test_the_page_shows_tokens_calls_and_latency_beside_cost(owner_client, spent):
    page = owner_client.get("/spend/").content.decode()

    assert re.search(r"data-total-cost>\$1\.750055<", page)
    assert re.search(r"data-total-calls>3<", page) and re.search(r"data-total-tokens>111 / 56<", page)
    assert re.search(r"data-total-latency>400 ms / 800 ms<", page)
    assert re.findall(r"data-model-latency>([^<]*)<", page) == ["800 ms / 800 ms", "200 ms / 400 ms"]


def test_the_day_chart_stacks_each_days_spend_by_model(owner_client, spent):
    stacked = _chart_data(owner_client.get("/spend/"))["day_by_model"]

    today, yesterday = spent["flash"].created.date().isoformat(), spent["pro"].created.date().isoformat()
    series = {each["model"]: dict(zip(stacked["days"], each["costs"], strict=True)) for each in stacked["models"]}
    assert list(series) == ["gemini-2.5-pro", "gemini-2.5-flash"]
    assert (series["gemini-2.5-pro"][yesterday], series["gemini-2.5-pro"][today]) == ("1.500000", "0")
    assert (series["gemini-2.5-flash"][yesterday], series["gemini-2.5-flash"][today]) == ("0.000055", "0.250000")
    assert len(stacked["days"]) == 30


def test_the_stack_names_the_dearest_models_and_puts_the_rest_together(owner_client, key, make_log):
    for number in range(8):
        make_log(key, model=f"model-{number}", cost=Decimal(number + 1))

    models = [each["model"] for each in _chart_data(owner_client.get("/spend/"))["day_by_model"]["models"]]

    assert models == [f"model-{number}" for number in range(7, 1, -1)] + ["2 other models"]


def test_the_spend_page_never_shows_another_orgs_calls(owner_client, spent, other_key, make_log):
    make_log(other_key, model="claude-sonnet-4", cost=Decimal("9.000000"), latency_ms=9000, prompt_tokens=9999)

    response = owner_client.get("/spend/")

    page = response.content.decode()
    assert re.search(r"data-total-calls>3<", page) and re.search(r"data-total-latency>400 ms / 800 ms<", page)
    assert "claude-sonnet-4" not in [each["model"] for each in _chart_data(response)["day_by_model"]["models"]]


def test_the_calls_csv_has_a_row_per_call_of_the_range_newest_first(owner_client, key, spent):
    rows = _calls_csv(owner_client)

    header, calls = rows[0], rows[1:]
    assert header[:4] == ["created", "request_id", "key", "key_name"]
    assert [row[1] for row in calls] == ["req-flash", "req-flash-2", "req-pro"]
    pro = dict(zip(header, calls[2], strict=True))
    assert (pro["key"], pro["key_name"], pro["model"], pro["cost"]) == (key.prefix, "researcher", "gemini-2.5-pro",
                                                                         "1.500000")
    assert (pro["prompt_tokens"], pro["latency_ms"], pro["tags"]) == ("100", "800", '["customer:acme"]')
    assert dict(zip(header, calls[1], strict=True))["cost"] == "0.000055"


def test_the_calls_csv_takes_the_pages_range(owner_client, spent):
    today = timezone.now().date().isoformat()

    assert [row[1] for row in _calls_csv(owner_client, since=today)[1:]] == ["req-flash"]


def test_the_calls_csv_streams_more_than_a_page_of_calls(owner_client, key, make_log):
    made = {make_log(key).request_id for _ in range(1203)}

    assert {row[1] for row in _calls_csv(owner_client)[1:]} == made


def test_the_calls_csv_holds_no_call_of_another_org(owner_client, outsider_client, spent, other_key, make_log):
    make_log(other_key, request_id="req-theirs")

    assert "req-theirs" not in [row[1] for row in _calls_csv(owner_client)]
    assert [row[1] for row in _calls_csv(outsider_client)[1:]] == ["req-theirs"]


def test_the_calls_csv_keeps_spreadsheets_from_running_names_as_formulas(owner_client, org, system_actor, make_log):
    key, _ = virtual_key_create(org=org, name="=HYPERLINK(\"http://evil\")", actor=system_actor)
    make_log(key, run_id="+SUM(A1)")

    row = _calls_csv(owner_client)[1]

    assert "'=HYPERLINK(\"http://evil\")" in row and "'+SUM(A1)" in row


@pytest.mark.parametrize("params", [{"since": "2025-01-01", "until": "2025-03-01"}, {"since": "someday"}])
def test_a_range_too_long_or_bad_for_the_calls_csv_is_a_400(owner_client, params):
    assert owner_client.get("/spend/calls.csv", params).status_code == 400
