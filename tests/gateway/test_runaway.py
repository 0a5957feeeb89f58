"""Runaway protection of a run (X-Nemo-Run), through the openai package on real PostgreSQL and
Redis: its envelope, its most steps and the loop guard (CONTRACT.md, "Budgets agents can use,
and runaway protection")."""

from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal

import openai
import pytest
from django.db.models import Sum

from analytics.models import RequestLog
from tests.fakes.behaviours import Reply
from tests.fakes.openai import FakeOpenAI
from tests.gateway.conftest import openai_routing
from tests.gateway.test_agent_run import SEARCH_TOOL

pytestmark = [pytest.mark.postgres, pytest.mark.redis]

MESSAGES = [{"role": "user", "content": "Find the next lead."}]


@pytest.fixture
def fake(monkeypatch):
    monkeypatch.setenv("FAKE_OPENAI_KEY", "k")
    with FakeOpenAI() as fake:
        yield fake


def ask(client: openai.OpenAI, run: str, max_tokens: int = 1000, **headers: str):
    """One step of a run: the answer, or the error the gateway answered with."""
    try:
        return client.chat.completions.create(model="gpt-4o", messages=MESSAGES, tools=[SEARCH_TOOL],
                                              max_tokens=max_tokens, extra_headers={"X-Nemo-Run": run, **headers})
    except openai.APIStatusError as error:
        return error


def run_spend(run: str) -> Decimal:
    return RequestLog.objects.filter(run_id=run).aggregate(total=Sum("cost"))["total"] or Decimal(0)


def test_fifty_concurrent_calls_of_a_run_never_spend_past_its_envelope_and_the_key_serves_other_runs(
        start_gateway, make_tenant, fake):
    gateway = start_gateway(openai_routing(fake.base_url))
    tenant = make_tenant(credits=Decimal("50.00"))
    client = gateway.client(tenant.secret)
    # Each call reserves its worst case, about $0.0104 (1,000 output tokens at $10 per million and
    # its prompt): the envelope holds five of them at once.
    fake.script(*[Reply(text="working on it", delay_s=0.5)] * 50)

    with ThreadPoolExecutor(max_workers=50) as pool:
        answers = list(pool.map(lambda _: ask(client, "runaway", **{"X-Nemo-Run-Budget": "0.055"}), range(50)))
    other_run = ask(client, "another-run")

    served = [a for a in answers if not isinstance(a, openai.APIStatusError)]
    refused = [a for a in answers if isinstance(a, openai.APIStatusError)]
    assert 1 <= len(served) < 50
    assert {(e.status_code, e.body["code"], e.body["param"]) for e in refused} == {(402, "budget_exceeded", "run")}
    assert Decimal(0) < run_spend("runaway") <= Decimal("0.055")
    assert not isinstance(other_run, openai.APIStatusError)
    assert fake.count == len(served) + 1
    rows = RequestLog.objects.filter(run_id="runaway", status=402)
    assert rows.count() == len(refused)
    assert {(r.error_type, r.error_code, r.error_param, r.cost) for r in rows} == {
        ("budget_exceeded", "budget_exceeded", "run", Decimal(0))}


def test_a_later_call_cannot_raise_the_envelope_its_runs_first_call_set(start_gateway, make_tenant, fake):
    gateway = start_gateway(openai_routing(fake.base_url))
    client = gateway.client(make_tenant().secret)

    first = ask(client, "capped", **{"X-Nemo-Run-Budget": "0.012"})
    # Its worst case, about $0.02 (2,000 output tokens), fits the $100 it proposes, not the $0.012 set.
    raised = ask(client, "capped", max_tokens=2000, **{"X-Nemo-Run-Budget": "100"})

    assert not isinstance(first, openai.APIStatusError)
    assert (raised.status_code, raised.body["param"]) == (402, "run")
    assert "limit $0.012000" in raised.body["message"]


def test_the_keys_run_budget_caps_every_run_and_a_header_may_only_lower_it(start_gateway, make_tenant, fake):
    gateway = start_gateway(openai_routing(fake.base_url))
    client = gateway.client(make_tenant(run_budget=Decimal("0.012")).secret)

    within = ask(client, "run-a")
    past = ask(client, "run-a", max_tokens=2000)
    raised = ask(client, "run-b", max_tokens=2000, **{"X-Nemo-Run-Budget": "100"})
    lowered = ask(client, "run-c", **{"X-Nemo-Run-Budget": "0.001"})

    assert not isinstance(within, openai.APIStatusError)
    assert [(e.status_code, e.body["param"]) for e in (past, raised, lowered)] == [(402, "run")] * 3


def test_a_call_without_an_output_limit_is_fitted_to_its_runs_envelope(start_gateway, make_tenant, fake):
    gateway = start_gateway(openai_routing(fake.base_url))
    client = gateway.client(make_tenant().secret)

    answer = client.chat.completions.with_raw_response.create(
        model="gpt-4o", messages=MESSAGES, extra_headers={"X-Nemo-Run": "fitted", "X-Nemo-Run-Budget": "0.005"})

    # $0.005 less the prompt's worst case, at $10 per million output tokens: under 500 tokens.
    assert 256 <= int(answer.headers["x-nemo-max-tokens"]) < 500
    assert fake.requests[-1].json["max_completion_tokens"] == int(answer.headers["x-nemo-max-tokens"])


def test_a_run_past_its_keys_most_steps_is_refused(start_gateway, make_tenant, fake):
    gateway = start_gateway(openai_routing(fake.base_url))
    client = gateway.client(make_tenant(run_max_steps=3).secret)

    steps = [ask(client, "short") for _ in range(4)]
    other = ask(client, "another")

    assert [isinstance(s, openai.APIStatusError) for s in steps] == [False, False, False, True]
    assert (steps[3].status_code, steps[3].body["code"], steps[3].body["param"]) == (402, "run_max_steps", "run")
    assert not isinstance(other, openai.APIStatusError)
    assert fake.count == 4


def test_a_bad_run_budget_is_a_400(start_gateway, make_tenant, fake):
    gateway = start_gateway(openai_routing(fake.base_url))
    client = gateway.client(make_tenant().secret)

    bad = ask(client, "r", **{"X-Nemo-Run-Budget": "lots"})
    negative = ask(client, "r", **{"X-Nemo-Run-Budget": "-1"})

    assert (bad.status_code, bad.body["param"]) == (400, "X-Nemo-Run-Budget")
    assert negative.status_code == 400
    assert fake.count == 0


def test_the_loop_guard_stops_a_run_that_keeps_asking_for_the_same_tool_call(start_gateway, make_tenant, fake):
    gateway = start_gateway(openai_routing(fake.base_url))
    client = gateway.client(make_tenant(loop_limit=3).secret)
    # The same call each time, its arguments in another order once: the same canonical JSON.
    same = Reply(tool_calls=(("search", {"query": "lead", "page": 1}),))
    fake.script(same, Reply(tool_calls=(("search", {"page": 1, "query": "lead"}),)), same)

    steps = [ask(client, "looping") for _ in range(4)]
    other = ask(client, "another")

    assert [isinstance(s, openai.APIStatusError) for s in steps] == [False, False, False, True]
    assert (steps[3].status_code, steps[3].body["code"]) == (429, "run_loop_detected")
    assert int(steps[3].response.headers["retry-after"]) > 0
    assert not isinstance(other, openai.APIStatusError)
    assert fake.count == 4
    stopped = RequestLog.objects.get(run_id="looping", status=429)
    assert (stopped.error_code, stopped.error_param, stopped.cost, stopped.deployment) == (
        "run_loop_detected", "run", Decimal(0), "")


def test_different_tool_calls_do_not_trip_the_loop_guard(start_gateway, make_tenant, fake):
    gateway = start_gateway(openai_routing(fake.base_url))
    client = gateway.client(make_tenant(loop_limit=2).secret)
    fake.script(*[Reply(tool_calls=(("search", {"query": f"lead {n}"}),)) for n in range(5)])

    steps = [ask(client, "exploring") for _ in range(5)]

    assert not any(isinstance(s, openai.APIStatusError) for s in steps)


def test_a_runs_spend_is_rebuilt_from_its_log_rows(start_gateway, make_tenant, fake):
    gateway = start_gateway(openai_routing(fake.base_url))
    tenant = make_tenant()
    # The run spent before this gateway's counters knew of it (a restart, a flushed Redis).
    RequestLog.objects.create(request_id="req_earlier", org=tenant.org, key=tenant.key, key_prefix=tenant.key.prefix,
                              run_id="resumed:step", model="gpt-4o", status=200, cost=Decimal("0.05"))
    client = gateway.client(tenant.secret)

    resumed = ask(client, "resumed:step", **{"X-Nemo-Run-Budget": "0.055"})
    fresh = ask(client, "fresh", **{"X-Nemo-Run-Budget": "0.055"})

    assert (resumed.status_code, resumed.body["param"]) == (402, "run")
    assert "$0.005000 left" in resumed.body["message"]
    assert not isinstance(fresh, openai.APIStatusError)


def test_the_loop_guard_counts_the_tool_calls_of_streamed_answers(start_gateway, make_tenant, fake):
    gateway = start_gateway(openai_routing(fake.base_url))
    client = gateway.client(make_tenant(loop_limit=2).secret)
    fake.script(*[Reply(tool_calls=(("search", {"query": "lead"}),))] * 2)

    def stream_step():
        try:
            chunks = list(client.chat.completions.create(model="gpt-4o", messages=MESSAGES, tools=[SEARCH_TOOL],
                                                         stream=True, extra_headers={"X-Nemo-Run": "streamed"}))
        except openai.APIStatusError as error:
            return error.status_code
        return [c.choices[0].finish_reason for c in chunks if c.choices][-1]

    assert [stream_step() for _ in range(3)] == ["tool_calls", "tool_calls", 429]
    assert fake.count == 2
