"""The run view in a real headless Chromium: a run stopped by its envelope and one stopped by the
loop guard, with a key issued in the browser with its run limits (the ``server`` of
the dashboard tests' conftest: the whole product on a free port)."""

import uuid

import openai
import pytest
from playwright.sync_api import expect, sync_playwright

from tests.dashboard.conftest import CHROMIUM, CHROMIUM_ARGS, SCREENSHOTS
from tests.dashboard.test_browser import LOOKUP_TOOL, MODEL, _shot

QUESTION = [{"role": "user", "content": "Where is order 1042?"}]


def _call(agent: openai.OpenAI, run_id: str, max_tokens: int = 500, **headers: str) -> int:
    """One step of a run with the same tool offered; the status it was answered with."""
    try:
        agent.chat.completions.create(model=MODEL, messages=QUESTION, tools=[LOOKUP_TOOL], max_tokens=max_tokens,
                                      extra_headers={"X-Nemo-Run": run_id, **headers})
    except openai.APIStatusError as error:
        return error.status_code
    return 200


@pytest.mark.browser
def test_the_run_view_shows_a_run_stopped_by_its_envelope_and_one_stopped_by_the_loop_guard(server):
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    envelope_run, looping_run = f"capped-{uuid.uuid4().hex[:6]}", f"looping-{uuid.uuid4().hex[:6]}"

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        page = browser.new_context(viewport={"width": 1280, "height": 900}).new_page()
        page.set_default_timeout(10_000)
        page.goto(f"{server}/signup/")
        page.get_by_label("Email").fill("ada@example.com")
        page.get_by_label("Password").fill("a-long-passphrase-42")
        page.get_by_label("Organization name").fill("Lovelace Labs")
        page.get_by_role("button", name="Sign up").click()

        # A key whose runs stop once the same tool call was asked for twice.
        page.get_by_role("link", name="Issue a key").click()
        page.get_by_label("Name").fill("looping-agent")
        page.get_by_label("Loop guard").fill("2")
        page.get_by_role("button", name="Issue key").click()
        secret = page.locator("[data-secret]").inner_text().strip()
        agent = openai.OpenAI(base_url=f"{server}/v1", api_key=secret, max_retries=0)

        # A run of $0.002: a call that may cost $0.0013 fits, one that may cost $0.005 does not.
        capped = [_call(agent, envelope_run, **{"X-Nemo-Run-Budget": "0.002"}),
                  _call(agent, envelope_run, max_tokens=2000)]
        looping = [_call(agent, looping_run) for _ in range(3)]
        assert (capped, looping) == ([200, 402], [200, 200, 429])

        page.goto(f"{server}/runs/{envelope_run}")
        expect(page.locator("[data-run-stopped]")).to_have_attribute("data-run-stopped", "run_budget")
        expect(page.locator("[data-run-stopped]")).to_contain_text("Stopped by its envelope")
        expect(page.locator("[data-run-envelope]")).to_contain_text("/ $0.002")
        _shot(page, "20-run-stopped-by-envelope")

        page.goto(f"{server}/runs/{looping_run}")
        expect(page.locator("[data-run-stopped]")).to_have_attribute("data-run-stopped", "loop_guard")
        expect(page.locator("[data-run-stopped]")).to_contain_text("Stopped by the loop guard")
        expect(page.locator("ol.timeline > li")).to_have_count(3)
        _shot(page, "21-run-stopped-by-loop-guard")
        browser.close()
