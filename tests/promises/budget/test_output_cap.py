"""A call that names no output limit is sent the most its budgets can still pay for: budgets are
usable to the last minimal call, and never passed."""

import json
from decimal import Decimal

import pytest

from analytics.models import RequestLog
from gateway import pipeline
from gateway.dialects.chat_completions_request import LINKED_IMAGE_TOKENS
from money import from_micros, to_micros
from tests.fakes.behaviours import Reply
from tests.promises.budget.support import (
    LONG_ANSWER,
    ControlledOpenAI,
    bucket_of,
    burst,
    counters,
    ledger_micros,
    post_chat,
    priced_routing,
    reservations_left,
)

# Micro-dollars a token (USD per million tokens): a minimal call's 256 tokens cost 2,560.
INPUT, OUTPUT = Decimal("1"), Decimal("10")
ORG_DEFAULT_MAX_TOKENS = 16_384
UNCAPPED = json.dumps({"model": "gpt-4o", "messages": [{"role": "user", "content": "hello"}]}).encode()


@pytest.fixture
def fake(monkeypatch):
    monkeypatch.setenv("FAKE_OPENAI_KEY", "upstream-secret")
    with ControlledOpenAI() as upstream:
        yield upstream


@pytest.fixture
def gateway(start_gateway, fake):
    return start_gateway(priced_routing(fake, input=str(INPUT), output=str(OUTPUT)))


def smallest_call_micros() -> int:
    return int(len(UNCAPPED) * INPUT + pipeline.MIN_OUTPUT_TOKENS * OUTPUT)


def test_a_key_with_no_max_tokens_spends_its_budget_to_within_one_minimal_call_and_never_past_it(
        gateway, make_tenant, fake):
    budget = Decimal("0.02")
    tenant = make_tenant(key_budget=budget)
    answers = []
    for _ in range(40):
        fake.script(Reply(text=LONG_ANSWER))
        status, headers, _ = post_chat(gateway, tenant.secret, UNCAPPED)
        answers.append((status, headers.get("x-nemo-max-tokens")))
        if status != 200:
            break

    spent = to_micros(sum(RequestLog.objects.filter(status=200).values_list("cost", flat=True)))
    served = [int(cap) for status, cap in answers if status == 200]
    assert answers[-1][0] == 402
    assert to_micros(budget) - smallest_call_micros() < spent <= to_micros(budget)
    # Each call was sent the cap its reservation paid for, in the wire format's own field.
    sent = [request.json["max_completion_tokens"] for request in fake.requests]
    assert sent == served
    assert served[0] == (to_micros(budget) - len(UNCAPPED)) // 10
    assert served == sorted(served, reverse=True) and served[-1] >= pipeline.MIN_OUTPUT_TOKENS
    assert fake.count == len(served)


def test_concurrent_calls_with_no_max_tokens_are_all_answered_when_their_use_fits(start_gateway, make_tenant,
                                                                                    monkeypatch):
    """The old reservation of the model's whole maximum output (65,536 tokens at $2.50 a million,
    $0.16) let six of ten calls in on a $1.00 key; capped at the default (16,384), all ten fit."""
    monkeypatch.setenv("FAKE_OPENAI_KEY", "upstream-secret")
    with ControlledOpenAI(answer_delay_s=0.5) as fake:
        routing = priced_routing(fake, input="0.30", output="2.50")
        routing["deployments"][0]["max_output_tokens"] = 65_536
        gateway = start_gateway(routing)
        tenant = make_tenant(key_budget=Decimal("1.00"))

        answers = burst([gateway], tenant.secret, calls=10, body=UNCAPPED)

    assert [status for status, _, _ in answers] == [200] * 10
    assert {headers["x-nemo-max-tokens"] for _, headers, _ in answers} == {str(ORG_DEFAULT_MAX_TOKENS)}
    assert [r.json["max_completion_tokens"] for r in fake.requests] == [ORG_DEFAULT_MAX_TOKENS] * 10


def test_a_call_that_names_its_limit_is_reserved_and_sent_at_it(gateway, make_tenant, fake):
    tenant = make_tenant(key_budget=Decimal("0.02"))
    body = json.dumps({"model": "gpt-4o", "messages": [{"role": "user", "content": "hello"}],
                       "max_tokens": 300}).encode()

    status, headers, _ = post_chat(gateway, tenant.secret, body)

    assert (status, headers["x-nemo-max-tokens"]) == (200, "300")
    assert fake.requests[-1].json["max_tokens"] == 300


def test_a_burst_of_calls_with_no_max_tokens_never_spends_past_the_budget(start_gateway, make_tenant, monkeypatch):
    """200 at once against a key whose budget fits about twenty calls at the default cap: each is
    sent what is left when it is admitted, and the whole burst stays within the budget."""
    monkeypatch.setenv("FAKE_OPENAI_KEY", "upstream-secret")
    calls = 200
    with ControlledOpenAI(answer_delay_s=0.3) as fake:
        fake.script(*[Reply(text=LONG_ANSWER)] * calls)
        gateway = start_gateway(priced_routing(fake, input=str(INPUT), output=str(OUTPUT)))
        budget = Decimal("3.30")
        tenant = make_tenant(key_budget=budget, credits=Decimal("100.00"))

        results = burst([gateway], tenant.secret, calls=calls, body=UNCAPPED)

    statuses = [status for status, _, _ in results]
    served = statuses.count(200)
    refusals = {(body["error"]["code"], body["error"]["param"]) for status, _, body in results if status != 200}
    names = [bucket_of("key", tenant), bucket_of("credits", tenant)]
    assert served >= 20 and served + statuses.count(402) == calls
    assert refusals <= {("budget_exceeded", "key")}
    assert fake.count == served
    assert ledger_micros(org=tenant.org) <= to_micros(budget)
    assert counters(gateway, names) == {name: ledger_micros(org=tenant.org) for name in names}
    assert reservations_left(gateway) == []


def test_a_keys_own_default_output_limit_caps_what_a_call_naming_none_is_sent(start_gateway, make_tenant, fake):
    gateway = start_gateway(priced_routing(fake, input=str(INPUT), output=str(OUTPUT)))
    tenant = make_tenant(default_max_tokens=700)

    status, headers, _ = post_chat(gateway, tenant.secret, UNCAPPED)

    assert (status, headers["x-nemo-max-tokens"]) == (200, "700")
    assert fake.requests[-1].json["max_completion_tokens"] == 700


def test_an_image_named_by_url_is_reserved_at_the_most_an_image_costs(gateway, make_tenant, fake):
    """A URL's few bytes do not bound the tokens of the image it names."""
    body = json.dumps({"model": "gpt-4o", "max_tokens": 10, "messages": [{"role": "user", "content": [
        {"type": "text", "text": "What is this?"},
        {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}}]}]}).encode()
    worst_case = int((len(body) + LINKED_IMAGE_TOKENS) * INPUT + 10 * OUTPUT)
    fits = make_tenant(name="fits", key_budget=from_micros(worst_case))
    short = make_tenant(name="short", key_budget=from_micros(worst_case - 1))

    served, _, _ = post_chat(gateway, fits.secret, body)
    refused, _, answer = post_chat(gateway, short.secret, body)

    assert (served, refused) == (200, 402)
    assert f"may cost up to ${from_micros(worst_case)}" in answer["error"]["message"]
    assert fake.count == 1


def test_an_inlined_image_is_reserved_at_the_most_an_image_costs_not_its_bytes(gateway, make_tenant, fake):
    image = "data:image/png;base64," + "A" * 200_000
    body = json.dumps({"model": "gpt-4o", "max_tokens": 10, "messages": [{"role": "user", "content": [
        {"type": "text", "text": "What is this?"}, {"type": "image_url", "image_url": {"url": image}}]}]}).encode()
    worst_case = int((len(body) - len(image) + LINKED_IMAGE_TOKENS) * INPUT + 10 * OUTPUT)
    tenant = make_tenant(key_budget=from_micros(worst_case - 1))

    status, _, answer = post_chat(gateway, tenant.secret, body)

    assert status == 402
    assert f"may cost up to ${from_micros(worst_case)}" in answer["error"]["message"]


def test_no_prompt_is_reserved_above_the_context_window_of_its_links(start_gateway, make_tenant, fake):
    """A file named by id has no size here, an inlined image far more bytes than tokens: the
    model's context window bounds either."""
    routing = priced_routing(fake, input=str(INPUT), output=str(OUTPUT))
    routing["deployments"][0]["context_window"] = 1_000
    gateway = start_gateway(routing)
    # Room for two calls at the bound, none at a prompt of its bytes.
    tenant = make_tenant(key_budget=from_micros(2 * (1_000 * int(INPUT) + 10 * int(OUTPUT))))
    file_call = json.dumps({"model": "gpt-4o", "max_tokens": 10, "messages": [{"role": "user", "content": [
        {"type": "text", "text": "Summarize this."}, {"type": "file", "file": {"file_id": "file-abc"}}]}]}).encode()
    big_image = json.dumps({"model": "gpt-4o", "max_tokens": 10, "messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": "data:image/png;base64," + "A" * 5_000}}]}]}).encode()

    assert post_chat(gateway, tenant.secret, file_call)[0] == 200
    assert post_chat(gateway, tenant.secret, big_image)[0] == 200
    assert fake.count == 2
