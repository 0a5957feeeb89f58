"""The gateway on a Redis Cluster of its own (six nodes: three primaries, a replica each): budgets
hold at every level under a burst, rate limits and the circuit breaker work, the keys spread over
the primaries, and a primary's death (its replica takes over) is survived."""

from decimal import Decimal

import pytest

from analytics.models import RequestLog
from tests.fakes.behaviours import Reply, Status
from tests.promises.budget.support import (
    LONG_ANSWER,
    ControlledOpenAI,
    burst,
    post_chat,
    priced_routing,
    wait_until,
)
from tests.promises.budget.test_concurrency import LEVELS, check_the_budget_held

CALLS = 200

pytestmark = pytest.mark.postgres


@pytest.fixture
def on_cluster(settings, redis_cluster):
    """The gateways the test starts use the cluster."""
    settings.REDIS_URL = redis_cluster.url
    return redis_cluster


@pytest.fixture
def fake(monkeypatch):
    monkeypatch.setenv("FAKE_OPENAI_KEY", "upstream-secret")
    with ControlledOpenAI(answer_delay_s=0.3) as upstream:
        upstream.script(*[Reply(text=LONG_ANSWER)] * (CALLS + 1))
        yield upstream


@pytest.mark.parametrize("level", LEVELS)
def test_a_burst_over_two_workers_never_spends_past_the_budget_on_a_cluster(on_cluster, start_gateway, make_tenant,
                                                                           fake, level):
    tenant = make_tenant(**{"credits": Decimal("100.00"), **LEVELS[level]})
    routing = priced_routing(fake)
    workers = [start_gateway(routing), start_gateway(routing)]

    results = burst(workers, tenant.secret, calls=CALLS)

    check_the_budget_held(workers[1], tenant, fake, level, results)


def test_the_rate_limit_holds_on_a_cluster(on_cluster, start_gateway, make_tenant, fake):
    gateway = start_gateway(priced_routing(fake))
    tenant = make_tenant(rpm_limit=3)

    statuses = [post_chat(gateway, tenant.secret)[0] for _ in range(4)]

    assert statuses == [200, 200, 200, 429]
    assert fake.count == 3


def test_the_circuit_opens_on_a_cluster(on_cluster, start_gateway, make_tenant, monkeypatch):
    monkeypatch.setenv("FAKE_OPENAI_KEY", "upstream-secret")
    with ControlledOpenAI() as primary, ControlledOpenAI() as backup:
        routing = priced_routing(primary)
        routing["providers"]["backup"] = {**routing["providers"]["primary"], "base_url": backup.base_url}
        routing["deployments"].append({**routing["deployments"][0], "id": "gpt4o-backup", "provider": "backup"})
        routing["models"]["gpt-4o"]["chain"] = ["gpt4o-primary", "gpt4o-backup"]
        gateway = start_gateway(routing)
        tenant = make_tenant()
        primary.script(*[Status(500)] * 5)

        for _ in range(5):
            assert post_chat(gateway, tenant.secret)[0] == 200
        status, headers, _ = post_chat(gateway, tenant.secret)

        assert status == 200 and headers["x-nemo-attempts"] == "gpt4o-primary:circuit_open, gpt4o-backup:ok"
        assert primary.count == 5


def test_keys_spread_over_the_primaries(on_cluster, start_gateway, make_tenant, fake):
    """The cache and Idempotency-Key entries land on every primary; each budget's state on one."""
    gateway = start_gateway(priced_routing(fake))
    tenant = make_tenant(credits=Decimal("100.00"))
    before = on_cluster.primaries()

    client = gateway.client(tenant.secret)
    for i in range(30):
        client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "hello"}],
                                       max_tokens=20, extra_headers={"Idempotency-Key": f"spread-{i}"})

    grown = {port: keys - before.get(port, 0) for port, keys in on_cluster.primaries().items()}
    assert len(grown) == 3 and all(count > 0 for count in grown.values()), grown


def test_a_primary_dies_and_the_gateway_goes_on_through_its_replica(on_cluster, start_gateway, make_tenant, fake):
    gateway = start_gateway(priced_routing(fake))
    tenant = make_tenant(credits=Decimal("100.00"))
    assert post_chat(gateway, tenant.secret)[0] == 200
    state_port = on_cluster.port_of(gateway.app._state.store._prefix + "epoch")

    on_cluster.stop_node(state_port)
    try:
        wait_until(on_cluster.healthy, timeout_s=60, what="a replica to take over")
        statuses = [post_chat(gateway, tenant.secret)[0] for _ in range(5)]
        assert statuses == [200] * 5
        assert RequestLog.objects.filter(status=200).count() == 6
    finally:
        on_cluster.start_node(state_port)
        wait_until(on_cluster.healthy, timeout_s=60, what="the node to rejoin")
