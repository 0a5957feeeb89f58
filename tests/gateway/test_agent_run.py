"""The seed scenario: a 24-step tool-calling agent run survives its primary timing out on step 11."""

import json
from decimal import Decimal

from analytics.models import RequestLog
from tests.fakes.behaviours import Hang, Reply
from tests.fakes.openai import FakeOpenAI
from tests.gateway.test_fallback import two_link_routing

SEARCH_TOOL = {
    "type": "function",
    "function": {
        "name": "search",
        "description": "Search the web",
        "parameters": {"type": "object", "properties": {"query": {"type": "string"}}, "required": ["query"]},
    },
}


def test_a_24_step_run_survives_a_timeout_on_step_11(start_gateway, make_tenant, monkeypatch):
    monkeypatch.setenv("FAKE_OPENAI_KEY", "k")
    with FakeOpenAI() as primary, FakeOpenAI() as backup:
        gateway = start_gateway(two_link_routing(primary, backup))
        tenant = make_tenant(key_budget=Decimal("5.00"))
        client = gateway.client(tenant.secret, default_headers={"X-Nemo-Run": "agent-run-1"})
        step_reply = Reply(tool_calls=(("search", {"query": "next lead"}),))
        primary.script(*[step_reply] * 10, Hang(), *[step_reply] * 13)
        backup.script(step_reply)

        messages = [{"role": "system", "content": "You are a research agent."},
                    {"role": "user", "content": "Find 24 leads."}]
        for _ in range(24):
            answer = client.chat.completions.create(model="gpt-4o", messages=messages, tools=[SEARCH_TOOL],
                                                    max_tokens=200)
            message = answer.choices[0].message
            assert answer.choices[0].finish_reason == "tool_calls"
            messages.append(message.model_dump(exclude_none=True))
            for call in message.tool_calls:
                query = json.loads(call.function.arguments)["query"]
                messages.append({"role": "tool", "tool_call_id": call.id, "content": f"results for {query}"})

        steps = list(RequestLog.objects.filter(run_id="agent-run-1").order_by("created", "id"))

    assert len(steps) == 24 and all(step.status == 200 for step in steps)
    assert [n for n, step in enumerate(steps, start=1) if len(step.attempts) > 1] == [11]
    assert [a["outcome"] for a in steps[10].attempts] == ["timeout", "ok"]
    assert steps[10].deployment == "backup"
    assert {step.deployment for n, step in enumerate(steps, start=1) if n != 11} == {"primary"}
    assert all(step.tool_calls == [{"name": "search", "arguments": '{"query": "next lead"}'}] for step in steps)
    assert sum(step.cost for step in steps) <= Decimal("5.00")
    assert (primary.count, backup.count) == (24, 1)
