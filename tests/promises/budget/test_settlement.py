"""Every call is settled at what it really cost, however it ended, and its reservation released:
the counters then hold exactly what the log rows (the ledger) hold."""

import json
from decimal import Decimal

import aiohttp
import pytest

from analytics.models import RequestLog
from gateway.summary import CallSummary
from money import to_micros
from tests.fakes.behaviours import DieMidway, Raw, Reply, Status
from tests.promises.budget.support import (
    INPUT_PRICE,
    LONG_ANSWER,
    OUTPUT_PRICE,
    ControlledOpenAI,
    bucket_of,
    chat_body,
    counters,
    post_chat,
    priced_routing,
    reservation_micros,
    reservations_left,
    wait_until,
)


@pytest.fixture
def fake(monkeypatch):
    monkeypatch.setenv("FAKE_OPENAI_KEY", "upstream-secret")
    with ControlledOpenAI(event_gap_s=0.3) as upstream:
        yield upstream


@pytest.fixture
def tenant(make_tenant):
    return make_tenant(key_budget=Decimal("3.00"))


def check_settled_as_logged(gateway, tenant, row) -> None:
    names = [bucket_of("key", tenant), bucket_of("credits", tenant)]
    assert counters(gateway, names) == {name: to_micros(row.cost) for name in names}
    assert reservations_left(gateway) == []


def test_a_client_leaving_mid_stream_is_charged_for_what_was_generated(start_gateway, tenant, fake):
    gateway = start_gateway(priced_routing(fake))
    fake.script(Reply(text=LONG_ANSWER))
    stream = gateway.client(tenant.secret).chat.completions.create(
        model="gpt-4o", messages=[{"role": "user", "content": "Write at length"}], max_tokens=100, stream=True)

    received = [next(stream), next(stream)]
    stream.close()

    wait_until(lambda: RequestLog.objects.exists(), what="the log row")
    row = RequestLog.objects.get()
    assert received[1].choices[0].delta.content
    assert (row.status, row.stream) == (499, True)
    assert row.prompt_tokens > 0 and 0 < row.completion_tokens < len(LONG_ANSWER) // 4
    assert row.cost == (row.prompt_tokens * INPUT_PRICE + row.completion_tokens * OUTPUT_PRICE) / 10**6
    check_settled_as_logged(gateway, tenant, row)


def test_an_upstream_dying_mid_stream_is_settled_at_what_it_sent(start_gateway, tenant, fake):
    gateway = start_gateway(priced_routing(fake))
    fake.script(DieMidway(events=2))

    status, _, body = post_chat(gateway, tenant.secret, chat_body(stream=True))

    row = RequestLog.objects.get()
    assert (status, row.status) == (200, 502)
    assert "upstream_error" in body
    assert row.completion_tokens > 0 and row.cost > 0
    check_settled_as_logged(gateway, tenant, row)


def test_a_bug_of_ours_mid_stream_still_releases_the_reservation(start_gateway, tenant, fake, monkeypatch):
    """The first event has gone out (the upstream's events come 0.3 s apart) when the relay breaks."""
    gateway = start_gateway(priced_routing(fake))

    def broken(summary, chunk):
        raise RuntimeError("injected fault")

    # The first chunk is taken as usual; every one after it breaks.
    takers = iter([CallSummary.take_chunk])
    monkeypatch.setattr(CallSummary, "take_chunk", lambda summary, chunk: next(takers, broken)(summary, chunk))

    with pytest.raises(aiohttp.ClientPayloadError):
        post_chat(gateway, tenant.secret, chat_body(stream=True))

    wait_until(lambda: RequestLog.objects.exists(), what="the log row")
    row = RequestLog.objects.get()
    assert row.status == 500
    check_settled_as_logged(gateway, tenant, row)


def test_a_bug_of_ours_before_a_stream_sent_anything_is_a_500_in_the_openai_shape(
        start_gateway, tenant, fake, monkeypatch):
    """The response's head goes out with the first events: a relay that breaks before them can
    still answer an error the client can read."""
    gateway = start_gateway(priced_routing(fake))

    def broken(summary, chunk):
        raise RuntimeError("injected fault")

    monkeypatch.setattr(CallSummary, "take_chunk", broken)

    status, headers, body = post_chat(gateway, tenant.secret, chat_body(stream=True))

    wait_until(lambda: RequestLog.objects.exists(), what="the log row")
    row = RequestLog.objects.get()
    assert (status, body["error"]["code"], row.status) == (500, "internal_error", 500)
    assert headers["x-nemo-request-id"] == row.request_id
    check_settled_as_logged(gateway, tenant, row)


def test_a_call_every_link_failed_costs_nothing_and_holds_nothing(start_gateway, tenant, fake):
    gateway = start_gateway(priced_routing(fake))
    fake.script(Status(500))

    status, _, body = post_chat(gateway, tenant.secret)

    row = RequestLog.objects.get()
    assert (status, body["error"]["type"], row.status, row.cost) == (502, "upstream_error", 502, Decimal("0"))
    check_settled_as_logged(gateway, tenant, row)


def test_the_cost_header_is_the_rows_cost_with_cached_input_at_its_own_price(start_gateway, tenant, fake):
    gateway = start_gateway(priced_routing(fake, input="2.50", cached_input="1.25", output="10"))
    completion = {
        "id": "chatcmpl-cached", "object": "chat.completion", "created": 1, "model": "gpt-4o",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 1000, "completion_tokens": 50, "total_tokens": 1050,
                  "prompt_tokens_details": {"cached_tokens": 400}},
    }
    fake.script(Raw(json.dumps(completion)))

    status, headers, _ = post_chat(gateway, tenant.secret)

    row = RequestLog.objects.get()
    # 600 uncached input tokens at $2.50/M, 400 cached at $1.25/M, 50 output at $10/M.
    assert (status, headers["x-nemo-cost"]) == (200, "0.002500")
    assert (row.cost, row.cached_tokens) == (Decimal("0.002500"), 400)
    check_settled_as_logged(gateway, tenant, row)


def test_a_call_that_names_no_output_limit_is_sent_the_one_it_reserved(start_gateway, make_tenant, fake):
    # At this routing's price the whole of gpt-4o's output costs $16.38.
    tenant = make_tenant(credits=Decimal("50.00"), key_budget=Decimal("20.00"))
    gateway = start_gateway(priced_routing(fake))
    body = json.dumps({"model": "gpt-4o", "messages": [{"role": "user", "content": "hello"}]}).encode()

    status, headers, _ = post_chat(gateway, tenant.secret, body)

    sent = fake.requests[-1].json
    row = RequestLog.objects.get(request_id=headers["x-nemo-request-id"])
    assert status == 200
    # gpt-4o's maximum output (the catalog), the field OpenAI's servers take.
    assert (sent["max_completion_tokens"], "max_tokens" in sent) == (16_384, False)
    assert row.overshoot == 0


def test_an_answer_past_its_output_cap_is_charged_in_full_flagged_and_stops_the_key(start_gateway, make_tenant,
                                                                                   fake):
    """An upstream that ignores max_tokens: the ledger holds what the call really cost, its row
    says by how much that passed the reservation, and the key is refused until its budget is
    back in bounds."""
    body = chat_body(max_tokens=1)
    tenant = make_tenant(key_budget=Decimal("0.05"))
    gateway = start_gateway(priced_routing(fake))
    fake.script(Reply(text=LONG_ANSWER), Reply(text="short"))

    first = post_chat(gateway, tenant.secret, body)
    second = post_chat(gateway, tenant.secret, body)

    row = RequestLog.objects.get(request_id=first[1]["x-nemo-request-id"])
    real_cost = to_micros(row.cost)
    names = [bucket_of("key", tenant), bucket_of("credits", tenant)]
    assert (first[0], second[0], second[2]["error"]["param"]) == (200, 402, "key")
    assert fake.requests[0].json["max_tokens"] == 1
    # The prices are micro-dollars per token.
    assert real_cost == row.completion_tokens * OUTPUT_PRICE + row.prompt_tokens * INPUT_PRICE
    assert to_micros(row.overshoot) == real_cost - reservation_micros(body, max_tokens=1) > 0
    assert counters(gateway, names) == {name: real_cost for name in names}
    assert reservations_left(gateway) == []
