"""A new user's first hour, in a real headless Chromium against the real server.

Sign up, issue a key, call the proxy with it through the ``openai`` package as one run, find the
calls in the log and the run view, see the spend on the chart, revoke the key, and see the next
call refused. A screenshot of every step lands in ``test-artifacts/screenshots/``.

The server is the ``server`` fixture of conftest.py: the whole product under uvicorn in a thread.
"""

import json
import uuid
from decimal import Decimal

import openai
import pytest
from playwright.sync_api import Page, expect, sync_playwright

from tests.dashboard.conftest import CHROMIUM, CHROMIUM_ARGS, PHONE, SCREENSHOTS

MODEL = "gemini-2.5-flash"
LOOKUP_TOOL = {
    "type": "function",
    "function": {
        "name": "lookup_order",
        "parameters": {"type": "object", "properties": {"order_id": {"type": "string"}}, "required": ["order_id"]},
    },
}


def _shot(page: Page, name: str) -> None:
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)


def _agent_run(client: openai.OpenAI) -> None:
    """An agent's three steps: it asks, the model calls a tool, the agent answers with its result."""
    question = [{"role": "user", "content": "Where is order 1042?"}]
    first = client.chat.completions.create(model=MODEL, messages=question, tools=[LOOKUP_TOOL])
    call = first.choices[0].message.tool_calls[0]
    client.chat.completions.create(model=MODEL, tools=[LOOKUP_TOOL], messages=[
        *question,
        {"role": "assistant", "tool_calls": [call.model_dump()]},
        {"role": "tool", "tool_call_id": call.id, "content": "shipped yesterday"},
    ])
    client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "Thank the customer."}])


@pytest.mark.browser
def test_a_new_user_signs_up_issues_a_key_watches_its_calls_and_revokes_it(server):
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    run_id = f"support-run-{uuid.uuid4().hex[:6]}"

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        context = browser.new_context(viewport={"width": 1280, "height": 900})
        context.grant_permissions(["clipboard-read", "clipboard-write"], origin=server)
        page = context.new_page()
        page.set_default_timeout(10_000)

        # Sign up: a new org, with $5.00 of credits.
        page.goto(f"{server}/signup/")
        page.get_by_label("Email").fill("grace@example.com")
        page.get_by_label("Password").fill("a-long-passphrase-42")
        page.get_by_label("Organization name").fill("Hopper Labs")
        _shot(page, "01-sign-up")
        page.get_by_role("button", name="Sign up").click()
        expect(page).to_have_url(f"{server}/keys/")
        expect(page.get_by_text("No keys yet.")).to_be_visible()
        _shot(page, "02-keys-empty")

        # Issue a key for the agent, with a budget; read its secret from the page, once.
        page.get_by_role("link", name="Issue a key").click()
        page.get_by_label("Name").fill("support-agent")
        page.get_by_label(MODEL, exact=True).check()
        page.get_by_label("Budget (USD)").fill("5.00")
        page.get_by_label("Budget period").select_option("none")
        page.get_by_label("Requests per minute").fill("120")
        _shot(page, "03-issue-key")
        page.get_by_role("button", name="Issue key").click()
        secret = page.locator("[data-secret]").inner_text().strip()
        assert secret.startswith("sk-nemo-")
        page.locator("button[data-copy='#secret']").click()
        expect(page.get_by_role("button", name="Copied")).to_be_visible()
        assert page.evaluate("navigator.clipboard.readText()") == secret
        _shot(page, "04-key-secret-shown-once")

        # The agent makes its calls through the openai package, as one run.
        agent = openai.OpenAI(base_url=f"{server}/v1", api_key=secret, max_retries=0,
                              default_headers={"X-Nemo-Run": run_id})
        _agent_run(agent)

        # The calls are in the log; one opens with its attempt, tokens and tool call.
        page.goto(f"{server}/log/")
        rows = page.locator(f'tr[data-request-id]:has(a[href="/runs/{run_id}"])')
        expect(rows).to_have_count(3)
        _shot(page, "05-request-log")
        rows.last.get_by_role("link").first.click()
        expect(page.get_by_role("heading", name="Attempts")).to_be_visible()
        expect(page.get_by_role("cell", name="lookup_order")).to_be_visible()
        _shot(page, "06-one-call")

        # The run view: three steps on the timeline, none fell back, tool calls logged.
        page.goto(f"{server}/runs/")
        page.get_by_role("link", name=run_id).click()
        expect(page.locator("[data-steps]")).to_have_text("3 calls")
        expect(page.locator("ol.timeline > li")).to_have_count(3)
        expect(page.get_by_text("completed")).to_be_visible()
        _shot(page, "07-run-view")

        # Spend on the chart: Chart.js (served from static/) drew the day chart from the page's data.
        page.goto(f"{server}/spend/")
        expect(page.locator("canvas#chart-day")).to_be_visible()
        page.wait_for_function("window.Chart && Chart.getChart(document.getElementById('chart-day'))")
        data = json.loads(page.locator("#spend-data").inner_text())
        assert sum(Decimal(row["cost"]) for row in data["day"]) > 0
        assert sum(row["calls"] for row in data["model"]) == 3
        _shot(page, "08-spend-chart")

        # Settings: the sink form asks only for what the chosen sink type takes.
        page.goto(f"{server}/settings/")
        page.get_by_text("Add a sink").click()
        page.get_by_label("Type").select_option("datadog")
        expect(page.get_by_label("API key")).to_be_visible()
        expect(page.get_by_label("Bucket")).to_be_hidden()
        _shot(page, "09-settings")

        # The dashboard fits a phone: no page-wide sideways scrolling at 390 px.
        phone = browser.new_context(viewport=PHONE, storage_state=context.storage_state())
        phone_page = phone.new_page()
        for path, name in [("/keys/", "keys"), (f"/runs/{run_id}", "run"), ("/spend/", "spend")]:
            phone_page.goto(f"{server}{path}")
            assert phone_page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
            _shot(phone_page, f"10-phone-{name}")
        phone.close()

        # Revoke the key, after a confirmation, and the next call is refused.
        page.goto(f"{server}/keys/")
        page.get_by_role("link", name="support-agent").click()
        page.get_by_role("link", name="Revoke").click()
        _shot(page, "11-revoke-confirm")
        page.get_by_role("button", name="Revoke key").click()
        expect(page.get_by_text("Calls with it are refused from now on.")).to_be_visible()
        expect(page.locator("span.badge", has_text="revoked")).to_be_visible()
        _shot(page, "12-key-revoked")
        with pytest.raises(openai.AuthenticationError):
            agent.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "Still there?"}])

        browser.close()
