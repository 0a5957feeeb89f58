"""Log search and spend in a real headless Chromium at 1366 px and 390 px: a tag as a filter,
the totals and histogram above the table, a call's detail in a side panel (a sheet on a phone)
opened by mouse and by keyboard without leaving the list, each day's spend stacked by model, and
the CSV of the range's calls streamed by the real server. A screenshot of each lands in
``test-artifacts/screenshots/``."""

import csv
import io
from decimal import Decimal

import pytest
from playwright.sync_api import expect

from tests.dashboard.conftest import DESKTOP, PHONE
from tests.dashboard.test_layout import _page_width, _shot, _signed_in_page

pytestmark = pytest.mark.browser
VIEWPORTS = pytest.mark.parametrize("viewport", [DESKTOP, PHONE], ids=["desktop", "phone"])
BODY = {"model": "gemini-2.5-flash", "messages": [{"role": "user", "content": "Where is order 1042?"}]}
ANSWER = {"choices": [{"index": 0, "message": {"role": "assistant", "content": "It shipped yesterday."}}]}


@pytest.fixture
def calls(key, other_key, make_log):
    make_log(key, request_id="req-acme-1", tags=["eu", "customer:acme"], cost=Decimal("0.010000"),
             request_body=BODY, response_body=ANSWER)
    make_log(key, request_id="req-acme-2", tags=["customer:acme"], status=502, error="every link failed",
             attempts=[{"deployment": "flash-vertex", "outcome": "timeout", "latency_ms": 30000},
                       {"deployment": "flash-backup", "outcome": "error", "latency_ms": 640}])
    make_log(key, request_id="req-globex", tags=["customer:globex"], cost=Decimal("0.500000"), model="gemini-2.5-pro")
    make_log(other_key, request_id="req-theirs", tags=["customer:acme"], cost=Decimal("9.000000"), status=502)


@VIEWPORTS
def test_a_tag_filters_the_log_under_its_totals_and_histogram(server, owner, calls, viewport):
    with _signed_in_page(server, owner, viewport) as page:
        page.goto(f"{server}/log/")
        page.get_by_label("Tag").fill("customer:acme")
        page.get_by_role("button", name="Filter").click()
        page.wait_for_url("**tag=customer%3Aacme**")
        page.wait_for_function("window.Chart && Chart.getChart(document.getElementById('chart-log'))")

        _shot(page, f"log-tag-totals-{viewport['width']}")
        expect(page.locator("tr[data-request-id]")).to_have_count(2)
        assert page.locator("[data-total=calls]").inner_text() == "2"
        assert page.locator("[data-total=errors]").inner_text() == "1"
        assert page.locator("[data-total=cost]").inner_text() == "$0.01111"
        drawn = page.evaluate("""(() => { const chart = Chart.getChart(document.getElementById('chart-log'));
            return chart.data.datasets.map(set => set.data.reduce((a, b) => a + b, 0)); })()""")
        assert drawn == [1, 1]  # calls that did not fail, and failures
        assert _page_width(page) <= viewport["width"]


@VIEWPORTS
def test_a_calls_detail_opens_in_a_panel_beside_the_list_by_mouse_and_keyboard(server, owner, calls, viewport):
    with _signed_in_page(server, owner, viewport) as page:
        page.goto(f"{server}/log/")
        # A mark on the page that a reload would wipe.
        page.evaluate("window.stayed = true")
        page.locator("tr[data-request-id=req-acme-1] td[data-label=Model]").click()
        panel = page.locator("dialog#call-panel")
        expect(panel).to_be_visible()
        expect(panel.locator("[data-conversation] li")).to_have_count(2)

        _shot(page, f"log-panel-{viewport['width']}")
        assert page.evaluate("window.stayed") and page.url == f"{server}/log/"
        expect(panel.get_by_text("It shipped yesterday.")).to_be_visible()
        expect(panel.locator("a[data-panel-full]")).to_have_attribute("href", "/log/req-acme-1/")
        box = panel.bounding_box()
        if viewport is PHONE:
            assert (box["x"], box["width"], box["height"]) == (0, PHONE["width"], PHONE["height"])
        else:
            assert box["x"] > DESKTOP["width"] / 3 and box["x"] + box["width"] == DESKTOP["width"]
        page.keyboard.press("Escape")
        expect(panel).to_be_hidden()
        assert page.evaluate("document.activeElement.closest('tr').dataset.requestId") == "req-acme-1"

        # By keyboard: the next row's link, Enter, its attempts and error; Escape gives the focus back.
        page.locator("tr[data-request-id=req-acme-2] a[data-panel]").focus()
        page.keyboard.press("Enter")
        expect(panel.get_by_text("every link failed")).to_be_visible()
        expect(panel.get_by_text("timeout")).to_be_visible()
        assert page.evaluate("document.activeElement.hasAttribute('data-panel-close')")
        _shot(page, f"log-panel-keyboard-{viewport['width']}")
        page.keyboard.press("Escape")
        expect(panel).to_be_hidden()
        assert page.evaluate("document.activeElement.closest('tr').dataset.requestId") == "req-acme-2"
        assert page.evaluate("window.stayed") and _page_width(page) <= viewport["width"]


@VIEWPORTS
def test_the_spend_page_stacks_each_days_spend_by_model_and_exports_its_calls(server, owner, calls, viewport):
    with _signed_in_page(server, owner, viewport) as page:
        page.goto(f"{server}/spend/")
        page.wait_for_function("window.Chart && Chart.getChart(document.getElementById('chart-day'))")

        _shot(page, f"spend-stacked-{viewport['width']}")
        stacks = page.evaluate("""(() => { const chart = Chart.getChart(document.getElementById('chart-day'));
            return [chart.config.type, chart.options.scales.y.stacked,
                    chart.data.datasets.map(set => set.label)]; })()""")
        assert stacks == ["bar", True, ["gemini-2.5-pro", "gemini-2.5-flash"]]
        assert page.locator("[data-total-latency]").inner_text() == "420 ms / 420 ms"
        assert _page_width(page) <= viewport["width"]

        csv_link = page.locator("a[data-calls-csv]").get_attribute("href")
        response = page.request.get(f"{server}{csv_link}")
        assert response.ok and response.headers["content-type"].startswith("text/csv")
        rows = list(csv.reader(io.StringIO(response.text())))
        assert sorted(row[1] for row in rows[1:]) == ["req-acme-1", "req-acme-2", "req-globex"]
