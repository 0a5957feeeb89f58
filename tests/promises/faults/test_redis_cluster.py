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
    bucket_of,
    burst,
    counters,
    ledger_micros,
    post_chat,
    priced_routing,
    reservations_left,
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


@pytest.mark.parametrize("level", ["key", "org"])
def test_a_burst_over_two_gateway_processes_holds_the_budget_on_a_cluster(on_cluster, start_gateway_process,
                                                                         start_gateway, make_tenant, fake, level):
    tenant = make_tenant(**{"credits": Decimal("100.00"), **LEVELS[level]})
    routing = priced_routing(fake)
    processes = [start_gateway_process(routing), start_gateway_process(routing)]
    reader = start_gateway(routing)  # reads the counters as admission sees them

    results = burst(processes, tenant.secret, calls=CALLS)

    check_the_budget_held(reader, tenant, fake, level, results)


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


def test_each_orgs_counters_share_a_slot_and_the_orgs_spread_over_the_primaries(on_cluster, start_gateway,
                                                                                   make_tenant, fake):
    gateway = start_gateway(priced_routing(fake))
    prefix = gateway.app._state.store._prefix
    homes = {}
    for i in range(12):
        tenant = make_tenant(name=f"Org {i}", credits=Decimal("100.00"), key_budget=Decimal("50.00"), rpm_limit=100)
        assert post_chat(gateway, tenant.secret)[0] == 200
        keys = [f"{prefix}s:{bucket_of(level, tenant)}" for level in ("key", "credits")]
        ports = {on_cluster.port_of(key) for key in keys}
        # Every counter of the org's call, and its rate window, on one primary, which holds them.
        assert len(ports) == 1 and on_cluster.port_of(f"{prefix}rl:{{o{tenant.org.pk}}}k:{tenant.key.pk}:req") in ports
        assert all(on_cluster.holds(next(iter(ports)), key) for key in keys)
        homes[tenant.org.pk] = ports.pop()

    assert len(set(homes.values())) >= 2, homes


def test_a_primary_dies_and_the_gateway_goes_on_through_its_replica(on_cluster, start_gateway, make_tenant, fake):
    gateway = start_gateway(priced_routing(fake))
    tenant = make_tenant(credits=Decimal("100.00"))
    assert post_chat(gateway, tenant.secret)[0] == 200
    # The primary holding the org's counters, reservations and epoch.
    home = f"{gateway.app._state.store._prefix}s:{bucket_of('credits', tenant)}"
    state_port = on_cluster.port_of(home)

    on_cluster.stop_node(state_port)
    try:
        wait_until(lambda: on_cluster.port_of(home) != state_port and on_cluster.healthy(), timeout_s=60,
                   what="a replica to take over")
        answers = [post_chat(gateway, tenant.secret) for _ in range(5)]
        assert [status for status, _, _ in answers] == [200] * 5, answers
        assert RequestLog.objects.filter(status=200).count() == 6
    finally:
        on_cluster.start_node(state_port)
        wait_until(on_cluster.healthy, timeout_s=60, what="the node to rejoin")


def test_a_primary_lost_with_its_replica_stops_only_its_orgs_until_it_is_back(on_cluster, start_gateway,
                                                                              make_tenant, fake):
    gateway = start_gateway(priced_routing(fake))
    prefix = gateway.app._state.store._prefix
    tenants, homes = [], []
    # Not the primary of the deployment's own state, which every call needs.
    deployment_port = on_cluster.port_of(f"{prefix}cb:{{d:gpt4o-primary}}")
    while len(set(homes) - {deployment_port}) < 2:
        tenants.append(make_tenant(name=f"Org {len(tenants)}", credits=Decimal("100.00")))
        homes.append(on_cluster.port_of(f"{prefix}s:{bucket_of('credits', tenants[-1])}"))
    lost_port, kept_port = sorted(set(homes) - {deployment_port})
    lost, kept = tenants[homes.index(lost_port)], tenants[homes.index(kept_port)]
    for tenant in (lost, kept):
        assert post_chat(gateway, tenant.secret)[0] == 200
    on_cluster.configure("cluster-require-full-coverage", "no")
    ports = [lost_port, on_cluster.replica_of(lost_port)]

    for port in ports:
        on_cluster.stop_node(port)
    try:
        wait_until(lambda: post_chat(gateway, kept.secret)[0] == 200, timeout_s=60,
                   what="the other orgs to be served again")
        status, _, body = post_chat(gateway, lost.secret)
        assert (status, body.get("error", {}).get("code")) == (503, "counters_unavailable"), body
    finally:
        for port in ports:
            on_cluster.start_node(port)
        on_cluster.configure("cluster-require-full-coverage", "yes")
        wait_until(on_cluster.healthy, timeout_s=60, what="the nodes to rejoin")

    # Back, empty: its org's counters are rebuilt from the ledger and hold it.
    wait_until(lambda: post_chat(gateway, lost.secret)[0] == 200, timeout_s=30, what="the lost org to be served")
    names = [bucket_of("credits", lost)]
    # (A call's settlement lands just after its answer: the last call's reservation may be held
    # for a moment still.)
    wait_until(lambda: counters(gateway, names) == {names[0]: ledger_micros(org=lost.org)}, timeout_s=10,
               what="the counter to hold the ledger")
    assert reservations_left(gateway) == []
