"""Log search: custom tags as a filter, the totals and the calls-over-time histogram of the
search above its table, and one call as a fragment for the side panel; never another org's."""

import json
import re
from datetime import timedelta
from decimal import Decimal

import pytest
from django.utils import timezone

from analytics.selectors import log_totals

pytestmark = pytest.mark.django_db


def _listed(response) -> list[str]:
    assert response.status_code == 200
    return re.findall(r'data-request-id="([^"]+)"', response.content.decode())


def _total(page: str, name: str) -> str:
    return re.search(rf'data-total="{name}">([^<]*)<', page).group(1)


def _bars(page: str) -> list[dict]:
    return json.loads(re.search(r'<script id="log-histogram" type="application/json">(.*?)</script>', page,
                                re.S).group(1))


@pytest.fixture
def tagged(key, make_log):
    return {
        "acme-ok": make_log(key, request_id="req-acme-ok", tags=["eu", "customer:acme"], latency_ms=100,
                            cost=Decimal("0.010000"), prompt_tokens=10, completion_tokens=1),
        "acme-failed": make_log(key, request_id="req-acme-failed", tags=["customer:acme"], status=502,
                                latency_ms=300, cost=Decimal("0"), prompt_tokens=20, completion_tokens=0),
        "globex": make_log(key, request_id="req-globex", tags=["eu", "customer:globex"], latency_ms=900,
                           cost=Decimal("0.500000")),
        "untagged": make_log(key, request_id="req-untagged", latency_ms=200),
    }


def test_the_log_filters_by_a_tag_or_a_metadata_pair(owner_client, tagged):
    assert _listed(owner_client.get("/log/", {"tag": "customer:acme"})) == ["req-acme-failed", "req-acme-ok"]
    assert _listed(owner_client.get("/log/", {"tag": "eu"})) == ["req-globex", "req-acme-ok"]
    assert _listed(owner_client.get("/log/", {"tag": "customer"})) == []


def test_the_totals_above_the_table_are_those_of_the_search(owner_client, tagged):
    page = owner_client.get("/log/", {"tag": "customer:acme"}).content.decode()

    assert (_total(page, "calls"), _total(page, "errors"), _total(page, "cost")) == ("2", "1", "$0.01")
    assert _total(page, "tokens") == "30 / 1"
    assert _total(page, "latency") == "100 ms / 300 ms"
    assert sum(bar["calls"] for bar in _bars(page)) == 2 and sum(bar["errors"] for bar in _bars(page)) == 1


def test_the_histogram_has_a_bar_an_hour_for_a_day_and_a_bar_a_day_for_a_week(owner_client, key, make_log):
    now = timezone.now()
    make_log(key, created=now - timedelta(days=5))
    make_log(key, created=now - timedelta(hours=2))

    day = _bars(owner_client.get("/log/", {"since": (now - timedelta(hours=23)).strftime("%Y-%m-%dT%H:%M")})
                .content.decode())
    week = _bars(owner_client.get("/log/", {"since": (now - timedelta(days=6)).strftime("%Y-%m-%dT%H:%M")})
                 .content.decode())

    assert len(day) in (24, 25) and sum(bar["calls"] for bar in day) == 1
    assert len(week) == 7 and [bar["calls"] for bar in week if bar["calls"]] == [1, 1]
    assert re.fullmatch(r"\d{4}-\d\d-\d\d", week[0]["label"])


def test_the_totals_and_histogram_never_count_another_orgs_calls(owner_client, tagged, other_key, make_log):
    make_log(other_key, tags=["customer:acme"], status=502, cost=Decimal("9.000000"), latency_ms=5000)

    page = owner_client.get("/log/", {"tag": "customer:acme"}).content.decode()
    everything = owner_client.get("/log/").content.decode()

    assert (_total(page, "calls"), _total(page, "errors"), _total(page, "cost")) == ("2", "1", "$0.01")
    assert _total(everything, "calls") == "4" and sum(bar["calls"] for bar in _bars(everything)) == 4
    assert "$9" not in everything


def test_totals_read_the_orgs_newest_calls_only_up_to_their_bound_and_say_from_when(org, tagged):
    # Newest first: untagged, globex, acme-failed, acme-ok.
    totals = log_totals(org=org, scan=3, tag="customer:acme")

    assert (totals.calls, totals.narrowed_to) == (1, tagged["acme-failed"].created)
    assert log_totals(org=org, scan=4, tag="customer:acme").calls == 2


def test_a_call_opens_as_a_fragment_for_the_side_panel(owner_client, key, make_log):
    body = {"model": "gemini-2.5-flash", "messages": [{"role": "user", "content": "Where is order 1042?"}]}
    answer = {"choices": [{"index": 0, "message": {"role": "assistant", "content": "It shipped yesterday."}}]}
    make_log(key, request_id="req-panel", request_body=body, response_body=answer, status=502,
             error="every link failed", tags=["customer:acme"], cost=Decimal("0.001110"),
             attempts=[{"deployment": "flash-vertex", "outcome": "timeout", "latency_ms": 30000}])

    response = owner_client.get("/log/req-panel/panel/")

    fragment = response.content.decode()
    assert response.status_code == 200 and "<html" not in fragment
    assert "It shipped yesterday." in fragment and "every link failed" in fragment and "timeout" in fragment
    assert "$0.00111" in fragment and 'href="/log/req-panel/"' in fragment
    assert 'href="/log/?tag=customer%3Aacme"' in fragment


def test_another_orgs_call_is_no_panel(owner_client, other_key, make_log):
    make_log(other_key, request_id="req-theirs")

    assert owner_client.get("/log/req-theirs/panel/").status_code == 404
