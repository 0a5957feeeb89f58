"""Per-key RPM, TPM and parallel limits: a 429 in OpenAI's shape with ``Retry-After``, and the
``x-ratelimit-*`` headers of the contract on every answer. Nothing refused reaches the upstream."""

import threading

import pytest

from tests.promises.budget.support import (
    BODY,
    MAX_TOKENS,
    ControlledOpenAI,
    Held,
    burst,
    in_background,
    post_chat,
    priced_routing,
    wait_until,
)


@pytest.fixture
def fake(monkeypatch):
    monkeypatch.setenv("FAKE_OPENAI_KEY", "upstream-secret")
    with ControlledOpenAI() as upstream:
        yield upstream


@pytest.fixture
def gateway(start_gateway, fake):
    return start_gateway(priced_routing(fake))


def request_headers(headers: dict) -> tuple[str, str, str]:
    return (headers["x-ratelimit-limit-requests"], headers["x-ratelimit-remaining-requests"],
            headers["x-ratelimit-reset-requests"])


def test_the_fourth_call_in_a_minute_of_an_rpm_3_key_gets_429(gateway, make_tenant, fake):
    tenant = make_tenant(rpm_limit=3)

    answers = [post_chat(gateway, tenant.secret) for _ in range(4)]

    status, headers, body = answers[3]
    assert [a[0] for a in answers] == [200, 200, 200, 429]
    # One request every 20 s refills the window: each call moves its end 20 s further.
    assert [request_headers(a[1]) for a in answers[:3]] == [("3", "2", "20s"), ("3", "1", "40s"), ("3", "0", "60s")]
    assert request_headers(headers)[:2] == ("3", "0")
    assert 1 <= int(headers["retry-after"]) <= 20
    assert (body["error"]["type"], body["error"]["code"]) == ("rate_limit_error", "rate_limit_exceeded")
    assert fake.count == 3


def test_a_burst_cannot_overshoot_the_tpm_window(gateway, make_tenant, fake):
    # Each call holds its prompt (4 bytes a token) and its max_tokens in the window until it
    # settles: this window fits one call.
    tokens_per_call = len(BODY) // 4 + MAX_TOKENS
    tenant = make_tenant(tpm_limit=tokens_per_call)

    answers = burst([gateway], tenant.secret, calls=5)

    served = [a for a in answers if a[0] == 200]
    refused = [a for a in answers if a[0] == 429]
    assert (len(served), len(refused), fake.count) == (1, 4, 1)
    assert served[0][1]["x-ratelimit-limit-tokens"] == str(tokens_per_call)
    assert served[0][1]["x-ratelimit-remaining-tokens"] == "0"
    assert {a[1]["x-ratelimit-limit-tokens"] for a in refused} == {str(tokens_per_call)}
    assert all({"x-ratelimit-remaining-tokens", "x-ratelimit-reset-tokens"} <= a[1].keys() for a in refused)
    assert {a[2]["error"]["type"] for a in refused} == {"rate_limit_error"}
    assert all(int(a[1]["retry-after"]) >= 1 for a in refused)


def test_a_second_call_beyond_max_parallel_gets_429_until_the_first_is_done(gateway, make_tenant, fake):
    tenant = make_tenant(max_parallel=1)
    first = Held(released=threading.Event())
    fake.script(first)
    in_flight = in_background(post_chat, gateway, tenant.secret)
    wait_until(lambda: fake.count == 1, what="the first call to reach the upstream")

    status, headers, body = post_chat(gateway, tenant.secret)
    first.released.set()
    first_status = in_flight()[0]
    after_status = post_chat(gateway, tenant.secret)[0]

    assert (status, headers["retry-after"], body["error"]["type"]) == (429, "1", "rate_limit_error")
    assert "parallel" in body["error"]["message"]
    assert (first_status, after_status, fake.count) == (200, 200, 2)
