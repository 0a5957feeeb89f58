"""Worker processes share circuit state through Redis: one worker's failures protect another's calls."""

import pytest

from tests.fakes.behaviours import Status
from tests.fakes.openai import FakeOpenAI
from tests.gateway.test_fallback import two_link_routing

HELLO = [{"role": "user", "content": "hello"}]


@pytest.mark.redis
@pytest.mark.postgres
def test_a_circuit_opened_by_one_worker_is_open_for_another(start_gateway_process, make_tenant, monkeypatch):
    monkeypatch.setenv("FAKE_OPENAI_KEY", "k")
    with FakeOpenAI() as primary, FakeOpenAI() as backup:
        routing = two_link_routing(primary, backup)
        first_worker, second_worker = start_gateway_process(routing), start_gateway_process(routing)
        tenant = make_tenant()
        primary.script(*[Status(500)] * 5)
        for _ in range(5):
            first_worker.client(tenant.secret).chat.completions.create(model="gpt-4o", messages=HELLO, max_tokens=5)

        raw = second_worker.client(tenant.secret).chat.completions.with_raw_response.create(
            model="gpt-4o", messages=HELLO, max_tokens=5)

    assert raw.headers["x-nemo-attempts"] == "primary:circuit_open, backup:ok"
    assert primary.count == 5
