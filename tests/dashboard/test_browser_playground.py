"""The playground, replay from a stored call, a run's timeline and the keys page, in a real
headless Chromium against the whole product (the ``server`` fixture) at 1366 and 390 px.

The playground's calls go from the browser to the gateway's /v1/chat/completions with the
pasted secret, so they are checked where any call is: in the request log. Rows are written and
read outside the browser's block (Playwright runs an event loop in its thread, where the ORM may
not run).
"""

import json
import shlex
from datetime import timedelta
from decimal import Decimal

import pytest
from django.utils import timezone
from playwright.sync_api import Page, expect

from analytics.models import RequestLog
from billing.services import budget_set
from keys.services import virtual_key_create
from tests.dashboard.conftest import DESKTOP, PHONE
from tests.dashboard.test_layout import _page_width, _shot, _signed_in_page

pytestmark = pytest.mark.browser
VIEWPORTS = pytest.mark.parametrize("viewport", [DESKTOP, PHONE], ids=["desktop", "phone"])
MODEL = "gemini-2.5-flash"
# Keys as a client sent them, in an order PostgreSQL's jsonb would not keep.
UNSORTED = {"temperature": 0.3, "model": MODEL, "messages": [
    {"content": "You answer about orders.", "role": "system"}, {"content": "Where is order 1042?", "role": "user"}],
    "max_tokens": 40}


def _sent(page: Page) -> None:
    page.get_by_role("button", name="Send").click()
    page.wait_for_selector("[data-answer][data-state=done], [data-answer][data-state=failed]")


@pytest.fixture
def storing_org(org):
    org.store_prompts = True
    org.save(update_fields=["store_prompts"])
    return org


@VIEWPORTS
def test_the_playground_streams_a_call_with_a_key_and_the_log_has_it(server, owner, storing_org, system_actor,
                                                                      viewport):
    key, secret = virtual_key_create(org=storing_org, name="playground-agent", actor=system_actor)

    with _signed_in_page(server, owner, viewport) as page:
        page.goto(f"{server}/playground/?key={key.pk}")
        page.get_by_label("Its secret").fill(secret)
        page.get_by_label("Model", exact=True).select_option(MODEL)
        page.get_by_label("Temperature").fill("0.2")
        page.get_by_label("Max tokens").fill("50")
        page.get_by_label("System prompt").fill("You are terse.")
        page.get_by_label("Message", exact=True).fill("Where is order 1042?")
        _sent(page)
        page.wait_for_function("document.querySelector('[data-cost]').textContent.startsWith('$')")

        _shot(page, f"playground-streamed-{viewport['width']}")
        assert page.locator("[data-answer]").inner_text() == "Mock answer to: Where is order 1042?"
        # Rendered piece by piece as the stream came: the mock streams its answer in three.
        assert int(page.locator("[data-answer]").get_attribute("data-chunks")) >= 3
        assert page.locator("[data-call-error]").is_hidden()
        assert page.locator("[data-attempts]").inner_text().endswith(":ok")
        assert page.locator("[data-deployment]").inner_text() not in ("", "not served")
        assert "x-nemo-request-id: " in page.locator("[data-headers]").text_content()
        request_id = page.locator("[data-call-link]").inner_text()
        cost = page.locator("[data-cost]").inner_text()
        assert _page_width(page) <= viewport["width"]

        page.locator("[data-call-link]").click()
        expect(page.get_by_role("heading", name="Attempts")).to_be_visible()
        assert f"sk-nemo-{key.prefix}" in page.locator("dl.facts").inner_text()
        page.goto(f"{server}/log/")
        assert "playground-agent" in page.locator(f"tr[data-request-id='{request_id}']").inner_text()

    row = RequestLog.objects.get(request_id=request_id)
    assert (row.org_id, row.key_id, row.status, row.stream, row.endpoint) == (
        storing_org.pk, key.pk, 200, True, "chat.completions")
    assert cost == f"${row.cost}" and row.cost > 0
    assert row.request_body["messages"] == [{"role": "system", "content": "You are terse."},
                                            {"role": "user", "content": "Where is order 1042?"}]
    assert (row.request_body["temperature"], row.request_body["max_tokens"]) == (0.2, 50)


def test_the_playground_says_in_words_why_a_call_was_refused(server, owner, org, system_actor):
    key, secret = virtual_key_create(org=org, name="broke", actor=system_actor)
    budget_set(org=org, key=key, amount=Decimal("0.000001"), period="none", actor=system_actor)
    other, other_secret = virtual_key_create(org=org, name="other", actor=system_actor)

    with _signed_in_page(server, owner, DESKTOP) as page:
        page.goto(f"{server}/playground/?key={key.pk}")
        page.get_by_label("Message", exact=True).fill("Hello")
        page.get_by_label("Its secret").fill(other_secret)
        page.get_by_role("button", name="Send").click()
        refused_locally = page.locator("[data-pg-error]").inner_text()
        page.get_by_label("Its secret").fill(secret)
        _sent(page)

        _shot(page, "playground-402")
        error = page.locator("[data-call-error]").inner_text()

    assert "is not the secret of broke" in refused_locally
    assert error.startswith("402: Refused before anything was sent upstream: this key's budget cannot pay")
    assert RequestLog.objects.filter(key=other).count() == 0
    assert RequestLog.objects.get(key=key).status == 402


@VIEWPORTS
def test_a_stored_call_opens_in_the_playground_is_edited_and_sent(server, owner, storing_org, system_actor,
                                                                   make_log, viewport):
    key, secret = virtual_key_create(org=storing_org, name="replayer", actor=system_actor)
    stored = make_log(key, request_body=UNSORTED, response_body={"choices": [
        {"index": 0, "message": {"role": "assistant", "content": "It shipped."}}]})

    with _signed_in_page(server, owner, viewport) as page:
        page.goto(f"{server}/log/{stored.request_id}/")
        page.get_by_role("link", name="Open in playground").click()
        page.wait_for_url("**/playground/?from=*")

        assert page.get_by_label("Key", exact=True).input_value() == str(key.pk)
        assert page.get_by_label("Model", exact=True).input_value() == MODEL
        assert page.get_by_label("System prompt").input_value() == "You answer about orders."
        assert page.get_by_label("Temperature").input_value() == "0.3"
        assert page.get_by_label("Max tokens").input_value() == "40"
        message = page.get_by_label("Message", exact=True)
        assert message.input_value() == "Where is order 1042?"
        message.fill("Where is order 2077?")
        page.get_by_label("Stream the answer").uncheck()
        page.get_by_label("Its secret").fill(secret)
        _sent(page)

        _shot(page, f"playground-replay-{viewport['width']}")
        assert page.locator("[data-answer]").inner_text() == "Mock answer to: Where is order 2077?"
        assert page.locator("[data-cost]").inner_text().startswith("$")
        request_id = page.locator("[data-call-link]").inner_text()
        assert _page_width(page) <= viewport["width"]

    again = RequestLog.objects.get(request_id=request_id)
    assert (again.key_id, again.stream) == (key.pk, False)
    # The stored request as it was, in its key order, with the one message edited.
    assert list(again.request_body)[:4] == list(UNSORTED)
    assert again.request_body["messages"] == [{"content": "You answer about orders.", "role": "system"},
                                              {"content": "Where is order 2077?", "role": "user"}]


def test_a_stored_body_keeps_its_key_order_on_the_page_in_curl_and_in_the_api(server, owner, key, make_log):
    row = make_log(key, request_body=UNSORTED)

    with _signed_in_page(server, owner, DESKTOP) as page:
        page.context.grant_permissions(["clipboard-read", "clipboard-write"], origin=server)
        page.goto(f"{server}/log/{row.request_id}/")
        shown = page.locator("h3:has-text('Request') + pre.body").inner_text()
        page.locator("button[data-copy='#again-curl']").click()
        expect(page.locator("button[data-copy='#again-curl']")).to_have_text("Copied")
        curl = page.evaluate("navigator.clipboard.readText()")
        api = page.evaluate(f"fetch('/api/v1/logs/{row.request_id}').then(r => r.text())")

    command = shlex.split(curl.replace("\\\n", ""))
    bodies = [json.loads(shown), json.loads(command[command.index("-d") + 1]), json.loads(api)["request_body"]]
    for body in bodies:
        assert list(body) == ["temperature", "model", "messages", "max_tokens"]
        assert [list(message) for message in body["messages"]] == [["content", "role"], ["content", "role"]]


@VIEWPORTS
def test_a_runs_timeline_puts_each_step_on_a_time_axis_with_the_runs_totals(server, owner, key, make_log,
                                                                            viewport):
    began = timezone.now() - timedelta(minutes=2)
    fell_back = [{"deployment": "flash-vertex", "outcome": "timeout", "latency_ms": 1500},
                 {"deployment": "flash-backup", "outcome": "ok", "latency_ms": 500}]
    for offset_ms, latency_ms, extra in [(0, 1000, {}), (2000, 2000, {"attempts": fell_back}),
                                         (6000, 2000, {"status": 502, "error": "every link failed"})]:
        make_log(key, run_id="support/ticket-1042", created=began + timedelta(milliseconds=offset_ms),
                 latency_ms=latency_ms, cost=Decimal("0.25"), **extra)

    with _signed_in_page(server, owner, viewport) as page:
        page.goto(f"{server}/runs/support/ticket-1042")
        bars = page.evaluate("""[...document.querySelectorAll('[data-bar]')].map(bar => {
            const track = bar.parentElement.getBoundingClientRect(), box = bar.getBoundingClientRect();
            return [(box.left - track.left) / track.width, box.width / track.width];
        })""")
        tip = page.locator("li[data-step='2'] [data-bar]").get_attribute("title")

        _shot(page, f"run-timeline-axis-{viewport['width']}")
        assert bars == [[0, pytest.approx(0.125, abs=0.01)], [pytest.approx(0.25, abs=0.01)] * 2,
                        [pytest.approx(0.75, abs=0.01), pytest.approx(0.25, abs=0.01)]]
        assert page.locator("li.step.fallback").get_attribute("data-step") == "2"
        assert page.locator("li.step.failed").get_attribute("data-step") == "3"
        assert "every link failed" in page.locator("li.step.failed").inner_text()
        assert "1200 in / 300 out tokens" in tip and "$0.25" in tip and "fell back" in tip
        assert page.locator("[data-total-steps]").inner_text() == "3"
        assert page.locator("[data-total-duration]").inner_text() == "8.00 s"
        assert page.locator("[data-total-tokens]").inner_text() == "4500"
        assert page.locator("[data-total-spend]").inner_text() == "$0.75"
        assert page.locator(".axis .mark").all_inner_texts() == ["0 ms", "2.00 s", "4.00 s", "6.00 s", "8.00 s"]
        assert _page_width(page) <= viewport["width"]


@VIEWPORTS
def test_the_keys_page_shows_each_keys_use_and_when_its_budget_resets(server, owner, org, system_actor, make_log,
                                                                      viewport):
    key, _ = virtual_key_create(org=org, name="busy-agent", actor=system_actor)
    budget_set(org=org, key=key, amount=Decimal("5.00"), period="daily", actor=system_actor)
    for status in (200, 200, 200, 502):  # today's: a daily budget's calls are today's
        make_log(key, status=status, created=timezone.now())
    idle, _ = virtual_key_create(org=org, name="idle-agent", actor=system_actor)
    tomorrow = (timezone.now() + timedelta(days=1)).strftime("%Y-%m-%d")

    with _signed_in_page(server, owner, viewport) as page:
        page.goto(f"{server}/keys/")
        busy = page.locator("tr", has_text="busy-agent")
        quiet = page.locator("tr", has_text="idle-agent")

        _shot(page, f"keys-use-{viewport['width']}")
        assert busy.locator("[data-calls]").inner_text().split() == ["4", "25.0%", "failed"]
        assert busy.locator("[data-last-used]").inner_text().endswith("UTC")
        assert busy.locator("[data-budget-resets]").inner_text() == f"resets {tomorrow} 00:00:00 UTC"
        assert quiet.locator("[data-calls]").inner_text() == "0"
        assert quiet.locator("[data-last-used]").inner_text() == "never"
        assert _page_width(page) <= viewport["width"]


@VIEWPORTS
def test_a_new_key_is_tested_from_its_key_issued_page_and_later_with_its_pasted_secret(server, owner, org,
                                                                                        viewport):
    with _signed_in_page(server, owner, viewport) as page:
        page.goto(f"{server}/keys/new/")
        page.get_by_label("Name").fill("tested-agent")
        page.get_by_role("button", name="Issue key").click()
        secret = page.locator("[data-secret]").inner_text().strip()
        page.get_by_role("button", name="Test this key").click()
        outcome = page.locator("[data-test-outcome]")
        expect(outcome).to_have_attribute("data-status", "200")

        _shot(page, f"key-issued-tested-{viewport['width']}")
        assert outcome.inner_text().startswith("It works: ")
        assert _page_width(page) <= viewport["width"]
        for snippet in ("python", "curl", "javascript", "claude-code"):
            assert secret in page.locator(f"[data-use={snippet}]").text_content()

        # The playground opens with the key chosen and its secret handed over in this tab.
        page.get_by_role("link", name="Open in playground").click()
        page.wait_for_url("**/playground/?key=*")
        assert page.get_by_label("Its secret").input_value() == secret
        key_page = page.url.replace("/playground/?key=", "/keys/") + "/"

        # Later the secret is no longer on screen: the key's page tests it with the pasted one.
        page.goto(key_page)
        page.get_by_label("The key's secret").fill(secret[:-1] + ("A" if secret[-1] != "A" else "B"))
        page.get_by_role("button", name="Test this key").click()
        expect(outcome).to_have_attribute("data-status", "401")
        refused = outcome.inner_text()
        page.get_by_label("The key's secret").fill(secret)
        page.get_by_role("button", name="Test this key").click()
        expect(outcome).to_have_attribute("data-status", "200")
        _shot(page, f"key-tested-pasted-{viewport['width']}")
        assert _page_width(page) <= viewport["width"]

    assert refused.startswith("401: The gateway did not accept this secret")
    calls = RequestLog.objects.filter(org=org).order_by("created", "id")
    # Both tests were calls of the key like any other (a wrong secret is no call of the key's).
    assert [(call.key_prefix, call.status) for call in calls] == [(secret[8:20], 200), (secret[8:20], 200)]
    assert all(call.key.name == "tested-agent" for call in calls)


@VIEWPORTS
def test_the_playground_sends_a_responses_call_in_its_shape_and_the_log_has_it(server, owner, storing_org,
                                                                                system_actor, viewport):
    key, secret = virtual_key_create(org=storing_org, name="responses-agent", actor=system_actor)

    with _signed_in_page(server, owner, viewport) as page:
        page.goto(f"{server}/playground/?key={key.pk}")
        page.get_by_label("Client API").select_option("responses")
        page.get_by_label("Its secret").fill(secret)
        page.get_by_label("Model", exact=True).select_option(MODEL)
        page.get_by_label("Max tokens").fill("50")
        page.get_by_label("System prompt").fill("You are terse.")
        page.get_by_label("Message", exact=True).fill("Where is order 1042?")
        page.locator("[data-preview-wrap] summary").click()
        shown = json.loads(page.locator("[data-request-preview]").inner_text())
        _sent(page)
        page.wait_for_function("document.querySelector('[data-cost]').textContent.startsWith('$')")

        _shot(page, f"playground-responses-{viewport['width']}")
        assert page.locator("[data-api-path]").inner_text() == "/v1/responses"
        assert page.locator("[data-answer]").inner_text() == "Mock answer to: Where is order 1042?"
        assert int(page.locator("[data-answer]").get_attribute("data-chunks")) >= 3
        assert page.locator("[data-call-error]").is_hidden()
        assert page.locator("[data-usage]").inner_text().endswith("out")
        request_id = page.locator("[data-call-link]").inner_text()
        assert _page_width(page) <= viewport["width"]

    row = RequestLog.objects.get(request_id=request_id)
    assert (row.key_id, row.status, row.stream, row.endpoint) == (key.pk, 200, True, "responses")
    assert shown == {"model": MODEL, "instructions": "You are terse.",
                     "input": [{"role": "user", "content": "Where is order 1042?"}], "max_output_tokens": 50,
                     "stream": True}
    # The log keeps the Chat Completions request the gateway sent upstream.
    assert row.request_body["messages"] == [{"role": "system", "content": "You are terse."},
                                            {"role": "user", "content": "Where is order 1042?"}]


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
def test_the_playground_sends_a_messages_call_in_anthropics_shape_and_the_log_has_it(server, owner, storing_org,
                                                                                      system_actor, stream):
    key, secret = virtual_key_create(org=storing_org, name="claude-agent", actor=system_actor)

    with _signed_in_page(server, owner, DESKTOP) as page:
        page.goto(f"{server}/playground/?key={key.pk}&api=messages")
        page.get_by_label("Its secret").fill(secret)
        page.get_by_label("Model", exact=True).select_option(MODEL)
        page.get_by_label("System prompt").fill("You are terse.")
        page.get_by_label("Message", exact=True).fill("Where is order 1042?")
        page.get_by_label("Stream the answer").set_checked(stream)
        shown = json.loads(page.locator("[data-request-preview]").text_content())
        _sent(page)
        page.wait_for_function("document.querySelector('[data-cost]').textContent.startsWith('$')")

        _shot(page, f"playground-messages-{'streamed' if stream else 'whole'}")
        assert page.get_by_label("Client API").input_value() == "messages"
        assert page.locator("[data-answer]").inner_text() == "Mock answer to: Where is order 1042?"
        assert page.locator("[data-call-error]").is_hidden()
        assert page.locator("[data-usage]").inner_text().endswith("out")
        request_id = page.locator("[data-call-link]").inner_text()

    row = RequestLog.objects.get(request_id=request_id)
    assert (row.key_id, row.status, row.stream, row.endpoint) == (key.pk, 200, stream, "messages")
    # Anthropic's max_tokens is required: the form's default, said beside the field.
    assert shown == {"model": MODEL, "system": "You are terse.",
                     "messages": [{"role": "user", "content": "Where is order 1042?"}],
                     "max_tokens": 1024, **({"stream": True} if stream else {})}
    assert row.request_body["messages"][0] == {"role": "system", "content": "You are terse."}
    assert row.request_body["max_tokens"] == 1024


def test_a_stored_messages_call_opens_in_the_playground_with_its_endpoint_and_is_sent_again(
        server, owner, storing_org, system_actor, make_log):
    key, secret = virtual_key_create(org=storing_org, name="claude-replayer", actor=system_actor)
    # As the log keeps a Messages call: the Chat Completions request it went upstream as.
    upstream = {"model": MODEL, "messages": [{"role": "system", "content": "You answer about orders."},
                                             {"role": "user", "content": "Where is order 1042?"}],
                "max_tokens": 40, "temperature": 0.3}
    stored = make_log(key, endpoint="messages", request_body=upstream)

    with _signed_in_page(server, owner, DESKTOP) as page:
        page.goto(f"{server}/log/{stored.request_id}/")
        page.get_by_role("link", name="Open in playground").click()
        page.wait_for_url("**/playground/?from=*")

        assert page.get_by_label("Client API").input_value() == "messages"
        assert page.get_by_label("System prompt").input_value() == "You answer about orders."
        assert page.get_by_label("Max tokens").input_value() == "40"
        assert page.get_by_label("Temperature").input_value() == "0.3"
        page.get_by_label("Message", exact=True).fill("Where is order 2077?")
        page.get_by_label("Stream the answer").uncheck()
        page.get_by_label("Its secret").fill(secret)
        shown = json.loads(page.locator("[data-request-preview]").text_content())
        _sent(page)

        _shot(page, "playground-messages-replay")
        assert page.locator("[data-answer]").inner_text() == "Mock answer to: Where is order 2077?"
        request_id = page.locator("[data-call-link]").inner_text()

    again = RequestLog.objects.get(request_id=request_id)
    assert (again.key_id, again.endpoint, again.stream) == (key.pk, "messages", False)
    assert shown == {"system": "You answer about orders.", "model": MODEL,
                     "messages": [{"role": "user", "content": "Where is order 2077?"}], "max_tokens": 40,
                     "temperature": 0.3}
    assert again.request_body["messages"] == [{"role": "system", "content": "You answer about orders."},
                                              {"role": "user", "content": "Where is order 2077?"}]
