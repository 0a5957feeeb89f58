import re
from datetime import timedelta
from decimal import Decimal

import pytest
from django.utils import timezone

from analytics.selectors import run_list
from billing.services import budget_set
from keys.services import virtual_key_create

pytestmark = pytest.mark.django_db

FELL_BACK = [{"deployment": "flash-vertex", "outcome": "timeout", "latency_ms": 30000},
             {"deployment": "flash-backup", "outcome": "ok", "latency_ms": 640}]
TOOL_CALL = [{"name": "lookup", "arguments": "{}"}]


@pytest.fixture
def run(key, org, system_actor, make_log):
    """A run of three steps; the second one fell back, two made tool calls."""
    budget_set(org=org, key=key, amount=Decimal("5.00"), period="none", actor=system_actor)
    return [
        make_log(key, run_id="agent-run", cost=Decimal("1.00"), tool_calls=TOOL_CALL),
        make_log(key, run_id="agent-run", cost=Decimal("0.90"), attempts=FELL_BACK, deployment="flash-backup",
                 tool_calls=TOOL_CALL),
        make_log(key, run_id="agent-run", cost=Decimal("0.50")),
    ]


def test_the_run_card_sums_up_the_run(owner_client, key, run):
    page = owner_client.get("/runs/agent-run").content.decode()

    assert f"sk-nemo-{key.prefix}" in page
    assert "3 calls" in page
    assert "step 2" in page
    assert "completed" in page
    assert "2 of 3" in page and "Steps that called tools" in page


def test_the_run_spend_is_not_weighed_against_the_keys_whole_budget(owner_client, run):
    page = owner_client.get("/runs/agent-run").content.decode()

    spend_card = page.split("data-run-spend")[1].split("data-tool-steps")[0]
    assert "$2.40" in spend_card and "$5.00" not in page
    assert "Tool calls logged" not in page and "2 / 3" not in page


def test_the_run_shows_its_steps_as_a_timeline(owner_client, run):
    page = owner_client.get("/runs/agent-run").content.decode()

    assert page.count('<li class="step') == 3
    assert page.count('<li class="step fallback') == 1
    assert "flash-backup" in page
    assert "lookup" in page
    for step in run:
        assert f"/log/{step.request_id}/" in page


def test_each_step_is_a_bar_at_its_start_as_long_as_it_took_with_the_runs_totals(owner_client, key, make_log):
    began = timezone.now() - timedelta(minutes=1)
    for offset_ms, latency_ms, status in [(0, 1000, 200), (2000, 2000, 200), (6000, 2000, 502)]:
        make_log(key, run_id="timed", created=began + timedelta(milliseconds=offset_ms), latency_ms=latency_ms,
                 status=status, cost=Decimal("0.25"))

    page = owner_client.get("/runs/timed").content.decode()

    bars = re.findall(r'data-bar style="left: ([\d.]+)%; width: ([\d.]+)%"', page)
    assert bars == [("0.00", "12.50"), ("25.00", "25.00"), ("75.00", "25.00")]
    assert page.count('<li class="step failed"') == 1
    assert re.search(r"data-total-duration>8.00 s<", page)
    assert re.search(r"data-total-tokens>4500<", page) and "3600 in, 900 out" in page
    assert re.search(r"data-total-spend>\$0.75<", page)
    assert re.findall(r'class="mark" style="left: [\d.]+%">([^<]+)<', page) == [
        "0 ms", "2.00 s", "4.00 s", "6.00 s", "8.00 s"]


def test_a_long_run_draws_its_steps_a_page_at_a_time_on_the_whole_runs_axis_and_totals(
        owner_client, key, make_log, monkeypatch):
    monkeypatch.setattr("dashboard.views.activity.RUN_STEPS_SHOWN", 2)
    began = timezone.now() - timedelta(minutes=1)
    steps = [make_log(key, run_id="long", created=began + timedelta(milliseconds=offset_ms), latency_ms=latency_ms,
                      attempts=FELL_BACK if offset_ms == 6000 else [], cost=Decimal("0.25"))
             for offset_ms, latency_ms in [(0, 1000), (2000, 2000), (6000, 2000)]]

    first = owner_client.get("/runs/long").content.decode()
    second = owner_client.get("/runs/long?page=2").content.decode()

    assert first.count('<li class="step') == 2 and f"/log/{steps[2].request_id}/" not in first
    assert "Steps 1–2 of 3" in first and 'href="?page=2"' in first
    assert re.findall(r'data-step="(\d+)"', second) == ["3"] and "Steps 3–3 of 3" in second
    assert '<li class="step fallback"' in second and 'href="?page=1"' in second
    for page in (first, second):
        assert re.search(r"data-total-steps>3<", page) and re.search(r"data-total-spend>\$0.75<", page)
        assert re.search(r"data-total-duration>8.00 s<", page) and "step 3" in page
    assert re.findall(r'data-bar style="left: ([\d.]+)%; width: ([\d.]+)%"', second) == [("75.00", "25.00")]
    assert owner_client.get("/runs/long?page=3").status_code == 404
    assert owner_client.get("/runs/long?page=soon").content.decode().count('<li class="step') == 2


def test_a_run_whose_last_call_failed_is_failed(owner_client, key, make_log):
    make_log(key, run_id="broken")
    make_log(key, run_id="broken", status=502)

    page = owner_client.get("/runs/broken").content.decode()

    assert "failed" in page


def test_run_ids_may_contain_slashes(owner_client, key, make_log):
    make_log(key, run_id="team/agent/42")

    assert owner_client.get("/runs/team/agent/42").status_code == 200


def test_the_runs_list_shows_the_orgs_runs(owner_client, run, other_key, make_log):
    make_log(other_key, run_id="their-run")

    page = owner_client.get("/runs/").content.decode()

    assert "/runs/agent-run" in page
    assert "$2.40" in page
    assert "their-run" not in page


def test_the_runs_list_filters_by_key(owner_client, org, run, system_actor, make_log):
    second, _ = virtual_key_create(org=org, name="second", actor=system_actor)
    make_log(second, run_id="second-run")

    page = owner_client.get(f"/runs/?key={second.pk}").content.decode()

    assert "second-run" in page
    assert "agent-run" not in page


def test_a_bad_key_filter_on_runs_is_a_400(owner_client):
    assert owner_client.get("/runs/?key=abc").status_code == 400


def test_a_member_reads_a_run(member_client, run):
    assert member_client.get("/runs/agent-run").status_code == 200


def test_an_outsider_gets_404_for_another_orgs_run(outsider_client, run):
    assert outsider_client.get("/runs/agent-run").status_code == 404


def test_a_run_that_does_not_exist_is_404(owner_client):
    assert owner_client.get("/runs/nothing-here").status_code == 404


def test_a_run_id_with_spaces_and_question_marks_is_linked_and_opens(owner_client, key, make_log):
    make_log(key, run_id="nightly batch #3?x=1")
    link = re.search(r'href="(/runs/nightly[^"]+)"', owner_client.get("/runs/").content.decode()).group(1)

    response = owner_client.get(link)

    assert response.status_code == 200
    assert "nightly batch #3?x=1" in response.content.decode()


@pytest.mark.parametrize("path", ["/runs/%00x", "/runs/crew/%00"])
def test_a_run_id_no_row_can_have_is_404(owner_client, path):
    assert owner_client.get(path).status_code == 404


def _runs_listed(response) -> list[str]:
    assert response.status_code == 200
    return re.findall(r'<td data-label="Run" class="wrap"><a href="/runs/([^"]+)"', response.content.decode())


def test_the_runs_list_counts_each_runs_fallbacks_and_failures(owner_client, key, run, make_log):
    make_log(key, run_id="agent-run", status=502)

    page = owner_client.get("/runs/").content.decode()

    row = page.split('href="/runs/agent-run"')[1].split("</tr>")[0]
    assert re.search(r"data-fallbacks>1<", row) and re.search(r"data-failed>1<", row)
    assert "failed" in row and "$2.40" in row


def test_the_runs_list_pages_to_older_runs_without_repeating_one(owner_client, key, make_log):
    from dashboard.views.activity import RUNS_SHOWN

    for number in range(RUNS_SHOWN + 3):
        make_log(key, run_id=f"run-{number:03d}")
    # An old run that is active again belongs on the first page only.
    make_log(key, run_id="run-000")

    first = owner_client.get("/runs/")
    older_link = re.search(r'rel="next" href="([^"]+)"', first.content.decode()).group(1).replace("&amp;", "&")
    older = owner_client.get(f"/runs/{older_link}")

    shown = _runs_listed(first) + _runs_listed(older)
    assert _runs_listed(first)[0] == "run-000"
    assert sorted(shown) == sorted(f"run-{number:03d}" for number in range(RUNS_SHOWN + 3))


def test_the_runs_list_matches_run_ids_by_prefix(owner_client, key, make_log):
    for run_id in ("support-1", "support-2", "billing-1"):
        make_log(key, run_id=run_id)

    assert _runs_listed(owner_client.get("/runs/", {"run": "support-"})) == ["support-2", "support-1"]


def test_a_listed_run_has_its_last_status_and_first_key_across_its_keys(org, key, system_actor, make_log):
    later, _ = virtual_key_create(org=org, name="relay", actor=system_actor)
    make_log(key, run_id="relayed", status=200)
    make_log(later, run_id="relayed", status=502)

    # Found through the first key's rows, summed up over the whole run.
    (listed,) = run_list(org=org, key_id=key.pk)

    assert (listed.status, listed.key_prefix, listed.steps_count) == ("failed", key.prefix, 2)
