"""The layout defects of a first walk, in a real headless Chromium at 1366 px and 390 px.

Each page is read through the real server (the ``server`` fixture) signed in as the org's owner
by a session cookie; the data is written directly. A screenshot of each page lands in
``test-artifacts/screenshots/`` (made by the tests), beside the other browser tests'.
"""

from collections.abc import Iterator
from contextlib import contextmanager
from decimal import Decimal

import pytest
from django.test import Client
from playwright.sync_api import Page, sync_playwright

from analytics.services import sink_create
from keys.services import membership_add
from tests.dashboard.conftest import CHROMIUM, CHROMIUM_ARGS, DESKTOP, PHONE, SCREENSHOTS

LONG_REQUEST_ID = "req_" + "7f3a9c1e5b2d4f60a8" * 2  # the longest a request id may be: 40
LONG_URL = "https://collector.example.com/" + "very-long-path-segment/" * 6 + "v1/logs"

pytestmark = pytest.mark.browser


@contextmanager
def _signed_in_page(server: str, user, viewport: dict) -> Iterator[Page]:
    """A page of a new headless Chromium, signed in as ``user``. Playwright runs an event loop in
    this thread, where the ORM may not run: write the test's rows before opening it."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    client = Client()
    client.force_login(user)
    cookie = {"name": "sessionid", "value": client.cookies["sessionid"].value, "url": server}
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        context = browser.new_context(viewport=viewport)
        context.add_cookies([cookie])
        page = context.new_page()
        page.set_default_timeout(15_000)
        yield page
        browser.close()


def _page_width(page: Page) -> int:
    return page.evaluate("document.documentElement.scrollWidth")


def _shot(page: Page, name: str) -> None:
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)


def _in_view(page: Page, selector: str) -> bool:
    """The element's box lies inside the window, not past its right edge nor scrolled off in a
    box that scrolls sideways."""
    return page.eval_on_selector(selector, """element => {
        const box = element.getBoundingClientRect();
        let inside = box.width > 0 && box.left >= 0 && box.right <= window.innerWidth;
        for (let parent = element.parentElement; parent; parent = parent.parentElement) {
            const outer = parent.getBoundingClientRect();
            if (getComputedStyle(parent).overflowX !== "visible" && parent.scrollWidth > parent.clientWidth + 1)
                inside = inside && box.right <= outer.right && box.left >= outer.left;
        }
        return inside;
    }""")


def test_a_call_with_a_long_request_id_fits_a_phone(server, owner, key, make_log):
    make_log(key, request_id=LONG_REQUEST_ID)

    with _signed_in_page(server, owner, PHONE) as page:
        page.goto(f"{server}/log/{LONG_REQUEST_ID}/")

        _shot(page, "call-detail-phone")
        assert _page_width(page) <= PHONE["width"]


def test_the_spend_charts_shrink_with_the_window_and_ticks_never_repeat(server, owner, key, make_log):
    for cost in ("0.025055", "0.0050", "0.000055", "0.00001"):
        make_log(key, cost=Decimal(cost))

    with _signed_in_page(server, owner, DESKTOP) as page:
        page.goto(f"{server}/spend/")
        page.wait_for_function("window.Chart && Chart.getChart(document.getElementById('chart-model'))")
        _shot(page, "spend-desktop")

        page.set_viewport_size({"width": 600, "height": 900})
        page.wait_for_function("document.getElementById('chart-day').getBoundingClientRect().right <= 600")

        _shot(page, "spend-narrowed")
        assert _page_width(page) <= 600
        ticks = page.evaluate("""['day', 'key', 'team', 'model'].map(group => {
        const chart = Chart.getChart(document.getElementById('chart-' + group));
        const axis = chart.scales[group === 'day' ? 'y' : 'x'];
        return axis.ticks.map(tick => tick.label);
    })""")
    for labels in ticks:
        assert len(labels) == len(set(labels)), labels


@pytest.mark.parametrize("viewport", [DESKTOP, PHONE], ids=["desktop", "phone"])
def test_the_settings_tables_keep_their_actions_in_view(server, owner, org, system_actor, viewport,
                                                        django_user_model):
    sink_create(org=org, type="langfuse", actor=system_actor,
                config={"url": LONG_URL, "public_key": "pk-lf-1", "secret_key": "sk-lf-1"})
    email = "a-teammate-with-a-rather-long-address@research.example.com"
    membership_add(org=org, user=django_user_model.objects.create_user(username=email, email=email),
                   role="member", actor=system_actor)

    with _signed_in_page(server, owner, viewport) as page:
        page.goto(f"{server}/settings/")

        _shot(page, f"settings-{viewport['width']}")
        assert _page_width(page) <= viewport["width"]
        assert _in_view(page, "a[href$='/delete/']")
        assert _in_view(page, "a[href*='/members/'][href$='/remove/']")


@pytest.fixture
def staff(django_user_model):
    return django_user_model.objects.create_superuser(username="staff", email="staff@example.com",
                                                      password="pw-staff-123")


def test_the_admin_request_log_shows_status_model_cost_and_latency_at_1366(server, staff, key, make_log):
    for number in range(5):
        make_log(key, request_id=f"{LONG_REQUEST_ID[:-2]}{number:02d}", run_id=f"support-run-{number}-" + "x" * 40,
                 model="gemini-2.5-flash-lite-preview", cost=Decimal("0.025055"))

    with _signed_in_page(server, staff, DESKTOP) as page:
        page.goto(f"{server}/admin/analytics/requestlog/")

        _shot(page, "admin-request-log-1366")
        for column in ("status", "model", "cost_usd", "latency"):
            assert _in_view(page, f"#result_list th.column-{column}"), column
        assert _in_view(page, "#result_list tbody tr:first-child td.field-latency")


def test_an_orgs_recent_calls_in_the_admin_show_their_cost_at_1366(server, staff, org, key, make_log):
    make_log(key, request_id=LONG_REQUEST_ID, deployment="flash-vertex-europe-west4-backup", cost=Decimal("0.00111"))

    with _signed_in_page(server, staff, DESKTOP) as page:
        page.goto(f"{server}/admin/keys/organization/{org.pk}/change/")

        _shot(page, "admin-org-recent-calls-1366")
        assert page.locator(".recent-calls td", has_text="$0.00111").count() == 1
        assert _in_view(page, ".recent-calls tbody tr:first-child td:nth-child(3)")


@pytest.mark.parametrize("viewport", [DESKTOP, PHONE], ids=["desktop", "phone"])
def test_the_overview_draws_its_chart_and_fits_the_window(server, owner, key, make_log, viewport):
    for status in (200, 201, 502):
        make_log(key, status=status)

    with _signed_in_page(server, owner, viewport) as page:
        page.goto(f"{server}/")
        page.wait_for_function("window.Chart && Chart.getChart(document.getElementById('chart-calls'))")

        _shot(page, f"overview-{viewport['width']}")
        assert page.url == f"{server}/overview/"
        assert page.locator("[data-activity=today] [data-calls]").inner_text() == "3"
        assert _page_width(page) <= viewport["width"]


@pytest.mark.parametrize("viewport", [DESKTOP, PHONE], ids=["desktop", "phone"])
def test_log_search_for_errors_fits_the_window(server, owner, key, make_log, viewport):
    make_log(key, status=502, run_id="support-run-" + "long" * 10, model="gemini-2.5-flash-lite-preview")
    make_log(key, status=200)

    with _signed_in_page(server, owner, viewport) as page:
        page.goto(f"{server}/log/")
        page.get_by_label("Statuses").select_option("errors")
        page.get_by_role("button", name="Filter").click()

        page.wait_for_url("**status_class=errors**")
        _shot(page, f"log-errors-{viewport['width']}")
        assert page.locator("tr[data-request-id]").count() == 1
        assert _page_width(page) <= viewport["width"]
        assert _in_view(page, "tr[data-request-id] td[data-cost]")


@pytest.mark.parametrize("viewport", [DESKTOP, PHONE], ids=["desktop", "phone"])
def test_the_runs_list_and_a_runs_timeline_fit_the_window(server, owner, key, make_log, viewport):
    run_id = "support-agent/" + "ticket-" * 6 + "1042"
    make_log(key, run_id=run_id, tool_calls=[{"name": "lookup_order", "arguments": "{}"}])
    make_log(key, run_id=run_id, status=502, attempts=[
        {"deployment": "flash-vertex", "outcome": "timeout", "latency_ms": 30000},
        {"deployment": "flash-backup", "outcome": "error", "latency_ms": 640}])

    with _signed_in_page(server, owner, viewport) as page:
        page.goto(f"{server}/runs/")
        _shot(page, f"runs-{viewport['width']}")
        assert page.locator("[data-failed]").first.inner_text() == "1"
        assert _page_width(page) <= viewport["width"]

        page.locator("td[data-label=Run] a").first.click()
        page.wait_for_selector("ol.timeline > li")

        _shot(page, f"run-timeline-{viewport['width']}")
        assert page.locator("ol.timeline > li").count() == 2
        assert _page_width(page) <= viewport["width"]


@pytest.mark.parametrize("viewport", [DESKTOP, PHONE], ids=["desktop", "phone"])
def test_a_stored_call_reads_as_a_chat_and_copies_as_curl(server, owner, key, make_log, viewport):
    body = {"model": "gemini-2.5-flash", "messages": [{"role": "user", "content": "Where is order 1042? " * 8}]}
    answer = {"choices": [{"index": 0, "message": {"role": "assistant", "content": "It shipped yesterday."}}]}
    make_log(key, request_id=LONG_REQUEST_ID, request_body=body, response_body=answer)

    with _signed_in_page(server, owner, viewport) as page:
        page.context.grant_permissions(["clipboard-read", "clipboard-write"], origin=server)
        page.goto(f"{server}/log/{LONG_REQUEST_ID}/")
        page.locator("button[data-copy='#again-curl']").click()

        _shot(page, f"call-replay-{viewport['width']}")
        assert page.locator("[data-conversation] li").count() == 2
        assert page.locator("button[data-copy='#again-curl']").inner_text() == "Copied"
        assert page.evaluate("navigator.clipboard.readText()").startswith("curl ")
        assert _page_width(page) <= viewport["width"]
