"""The promises under ordinary infrastructure faults, end to end.

A gateway as production runs it (gunicorn, two uvicorn worker processes) on a PostgreSQL cluster
and a Redis server of the suite's own, in front of a fake upstream that takes its time. Two
tenants call it at once: one with a budget that fits about twenty calls, fired at by bursts of
200 concurrent calls, and one whose traffic runs throughout. Meanwhile PostgreSQL restarts,
Redis restarts, Redis is flushed, or a worker is killed with SIGKILL. After each:

* spend is within the budget at every level (key, team, org, credits);
* the counters equal the sum of the log, and nothing stays reserved once the reaper has run;
* every call that reached the upstream (the fake keeps each request) has exactly one row;
* every answer the clients got has its row, and no answer is a 5xx but the contract's 503
  (refused before any upstream); only the killed worker's own calls lose their connection.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import aiohttp
import pytest
import yaml

from billing.reservations import RESERVATION_TTL_S, bucket_name, credits_bucket_name
from money import to_micros
from tests.promises.budget.support import ControlledOpenAI, priced_routing, reservation_micros
from tests.promises.faults.servers import PROJECT, PostgresCluster, RedisServer, free_port

pytestmark = [pytest.mark.postgres, pytest.mark.redis]

TIGHT_CLIENTS = 200
STEADY_CLIENTS = 40
UPSTREAM_DELAY_S = 0.2
# Enough for the fake's answers (it quotes the prompt), which are all within their cap.
MAX_TOKENS = 40
# The tight tenant's key fits about twenty worst cases; its team and org a few more.
TIGHT_BUDGETS = {"key": 20, "team": 24, "org": 28}
PREFIX = "nemo:"
WARM_UP_ROUNDS = 10


def body(marker: str) -> bytes:
    return json.dumps({"model": "gpt-4o", "max_tokens": MAX_TOKENS,
                       "messages": [{"role": "user", "content": marker}]}).encode()


RESERVATION = reservation_micros(body(f"tight-{uuid.uuid4().hex}"), max_tokens=MAX_TOKENS)


class Stack:
    """The cluster, the Redis, the fake upstream and the gateway, for the whole module."""

    def __init__(self, tmp: Path) -> None:
        self.postgres = PostgresCluster().create()
        self.postgres.migrate()
        self.redis = RedisServer().start()
        self.upstream = ControlledOpenAI(answer_delay_s=UPSTREAM_DELAY_S)
        self.upstream.start_in_thread()
        routing = tmp / "routing.yaml"
        routing.write_text(yaml.safe_dump(priced_routing(self.upstream)))
        self.env = {**os.environ, "DATABASE_URL": self.postgres.url, "REDIS_URL": self.redis.url,
                    "NEMO_ROUTER_CONFIG": str(routing), "DJANGO_SETTINGS_MODULE": "nemo.settings",
                    "FAKE_OPENAI_KEY": "upstream-secret", "DEBUG": "false",
                    "SECRET_KEY": os.environ.get("SECRET_KEY", "fault-suite-secret-key")}
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.gunicorn = subprocess.Popen(
            [str(Path(sys.executable).with_name("gunicorn")), "nemo.asgi:application", "-k",
             "uvicorn_worker.UvicornWorker", "-w", "2", "-b", f"127.0.0.1:{self.port}", "--graceful-timeout", "5",
             "--log-level", "warning"],
            cwd=PROJECT, env=self.env)
        self.wait_ready()

    def wait_ready(self) -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            assert self.gunicorn.poll() is None, "gunicorn exited"
            try:
                with aiohttp_get(f"{self.url}/v1/models") as status:
                    if status == 401 and len(self.workers()) == 2:
                        return
            except OSError:
                pass
            time.sleep(0.2)
        raise RuntimeError("the gateway did not start")

    def workers(self) -> list[int]:
        children = Path(f"/proc/{self.gunicorn.pid}/task/{self.gunicorn.pid}/children").read_text().split()
        return [int(pid) for pid in children]

    def django(self, code: str) -> str:
        """Runs Python with Django set up on the suite's database and Redis; its stdout."""
        done = subprocess.run([sys.executable, "-c", f"import django; django.setup()\n{code}"], cwd=PROJECT,
                              env=self.env, check=True, capture_output=True, text=True)
        return done.stdout

    def close(self) -> None:
        self.gunicorn.send_signal(signal.SIGTERM)
        try:
            self.gunicorn.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.gunicorn.kill()
        self.upstream.stop_in_thread()
        self.redis.destroy()
        self.postgres.destroy()


class aiohttp_get:
    """A blocking GET for readiness checks, as a context manager giving the status."""

    def __init__(self, url: str) -> None:
        self.url = url

    def __enter__(self) -> int:
        import urllib.error
        import urllib.request

        try:
            with urllib.request.urlopen(self.url, timeout=2) as response:
                return response.status
        except urllib.error.HTTPError as error:
            return error.code

    def __exit__(self, *exc_info) -> None:
        return None


@pytest.fixture(scope="module")
def stack(tmp_path_factory) -> Iterator[Stack]:
    running = Stack(tmp_path_factory.mktemp("faults"))
    yield running
    running.close()


@dataclass
class Tenant:
    name: str
    secret: str
    org_id: int
    team_id: int
    key_id: int
    budgets: dict[str, int]
    credits: int


_SETUP = """
import json
from decimal import Decimal
from money import from_micros
from billing.services import budget_set, organization_create_with_credits
from keys.audit import Actor
from keys.services import organization_settings_update, team_create, virtual_key_create
actor = Actor.system("fault suite")
org = organization_create_with_credits(name={name!r}, credits=Decimal({credits!r}), actor=actor)
org.store_prompts = True
org.save(update_fields=["store_prompts"])
team = team_create(org=org, name="agents", actor=actor)
key, secret = virtual_key_create(org=org, name="agent", team=team, actor=actor)
for level, micros in {budgets!r}.items():
    owner = {{"key": {{"key": key}}, "team": {{"team": team}}, "org": {{}}}}[level]
    budget_set(org=org, amount=from_micros(micros), actor=actor, **owner)
print(json.dumps({{"secret": secret, "org_id": org.pk, "team_id": team.pk, "key_id": key.pk}}))
"""


def make_tenant(stack: Stack, name: str, *, budgets: dict[str, int], credits: str) -> Tenant:
    made = json.loads(stack.django(_SETUP.format(name=name, credits=credits, budgets=budgets)).strip().splitlines()[-1])
    return Tenant(name=name, budgets=budgets, credits=to_micros(Decimal(credits)), **made)


@dataclass
class Outcome:
    status: int | None  # None: the connection was lost (the killed worker's calls)
    request_id: str | None
    code: str | None
    marker: str


@dataclass
class Traffic:
    outcomes: list[Outcome] = field(default_factory=list)

    def by_tenant(self, tenant: Tenant) -> list[Outcome]:
        return [o for o in self.outcomes if o.marker.startswith(tenant.name)]


async def _call(session: aiohttp.ClientSession, stack: Stack, tenant: Tenant, traffic: Traffic) -> Outcome:
    marker = f"{tenant.name}-{uuid.uuid4().hex}"
    headers = {"Authorization": f"Bearer {tenant.secret}", "Content-Type": "application/json"}
    try:
        async with session.post(f"{stack.url}/v1/chat/completions", data=body(marker), headers=headers) as response:
            answer = await response.json(content_type=None)
            error = answer.get("error") if isinstance(answer, dict) else None
            outcome = Outcome(response.status, response.headers.get("x-nemo-request-id"),
                              error.get("code") if error else None, marker)
    except (aiohttp.ClientError, TimeoutError) as lost:
        outcome = Outcome(None, None, repr(lost), marker)
    traffic.outcomes.append(outcome)
    return outcome


async def _warm_up(session: aiohttp.ClientSession, stack: Stack, tenants: list[Tenant]) -> None:
    """Both workers know the keys, as they do an agent's that has been running: a key first seen
    while the database is away cannot be checked, and its call cannot be logged for any org."""
    async def models(tenant: Tenant) -> None:
        headers = {"Authorization": f"Bearer {tenant.secret}"}
        async with session.get(f"{stack.url}/v1/models", headers=headers) as answer:
            assert answer.status == 200

    # Which worker accepts a connection is the kernel's choice, and on a loaded machine one busy
    # worker can leave a single round of calls all to the other: rounds apart in time give each
    # worker its turns (a key one worker never saw made this suite fail 1 run in 5 under load).
    for _ in range(WARM_UP_ROUNDS):
        await asyncio.gather(*(models(tenant) for tenant in tenants for _ in range(20)))
        await asyncio.sleep(0.05)


async def _until_served(session: aiohttp.ClientSession, stack: Stack, tenant: Tenant, traffic: Traffic, *,
                        timeout_s: float = 30.0) -> None:
    gives_up = time.monotonic() + timeout_s
    while (await _call(session, stack, tenant, traffic)).status != 200:
        assert time.monotonic() < gives_up, "the gateway did not serve again after the fault"
        await asyncio.sleep(0.1)


async def _traffic(stack: Stack, tight: Tenant, steady: Tenant, fault: Callable[[], None], *,
                   duration_s: float = 4.0) -> Traffic:
    """The steady tenant's clients call throughout; the tight tenant fires a burst of 200 just
    before the fault (its calls are at the upstream when it strikes) and another once the
    gateway serves again."""
    traffic = Traffic()
    # A connection per call: a kept-alive one the server closes as idle at the moment the client
    # reuses it would be a lost call the gateway did not lose.
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0, force_close=True),
                                     timeout=aiohttp.ClientTimeout(total=60)) as session:
        await _warm_up(session, stack, [tight, steady])
        ends = time.monotonic() + duration_s

        async def steady_client() -> None:
            while time.monotonic() < ends:
                outcome = await _call(session, stack, steady, traffic)
                if outcome.status != 200:
                    await asyncio.sleep(0.1)

        async def burst() -> None:
            await asyncio.gather(*(_call(session, stack, tight, traffic) for _ in range(TIGHT_CLIENTS)))

        async def retrying(calls: int = 5) -> None:
            """A client as an SDK is: a 503 is tried again after its Retry-After (each worker
            finds its database again on its own, so one may still refuse when another serves)."""
            for _ in range(calls):
                outcome = await _call(session, stack, tight, traffic)
                if outcome.status != 503:
                    return
                await asyncio.sleep(1)

        steady_clients = [asyncio.ensure_future(steady_client()) for _ in range(STEADY_CLIENTS)]
        await asyncio.sleep(0.5)
        first = asyncio.ensure_future(burst())
        await asyncio.sleep(UPSTREAM_DELAY_S / 2)
        await asyncio.to_thread(fault)
        # The second burst once the gateway serves again, its clients retrying as SDKs do: on a
        # loaded machine the whole first burst may still be waiting for its admission when the
        # fault strikes, and be refused.
        await _until_served(session, stack, steady, traffic)
        await asyncio.gather(*(retrying() for _ in range(TIGHT_CLIENTS)))
        await first
        await asyncio.gather(*steady_clients)
    return traffic


def run_traffic(stack: Stack, tight: Tenant, steady: Tenant, fault: Callable[[], None]) -> Traffic:
    return asyncio.run(_traffic(stack, tight, steady, fault))


def ledger(stack: Stack, column: str, owner_id: int) -> int:
    (total,) = stack.postgres.query(f"SELECT COALESCE(SUM(cost), 0) FROM analytics_requestlog WHERE {column} = %s",
                                    [owner_id])[0]
    return to_micros(total)


def buckets(tenant: Tenant) -> dict[str, tuple[str, str, int]]:
    """Each level's counter: (bucket, ledger column, owner id)."""
    now = datetime.now(UTC)
    return {
        "key": (bucket_name(tenant.org_id, "key", tenant.key_id, "none", now), "key_id", tenant.key_id),
        "team": (bucket_name(tenant.org_id, "team", tenant.team_id, "none", now), "team_id", tenant.team_id),
        "org": (bucket_name(tenant.org_id, "org", tenant.org_id, "none", now), "org_id", tenant.org_id),
        "credits": (credits_bucket_name(tenant.org_id), "org_id", tenant.org_id),
    }


def counters(stack: Stack, tenant: Tenant) -> dict[str, tuple[int | None, int]]:
    """Each level's (settled counter, reserved total) as Redis holds them."""
    client = stack.redis.client()
    try:
        found = {}
        for level, (name, _, _) in buckets(tenant).items():
            settled = client.get(f"{PREFIX}s:{name}")
            reserved = client.hget(f"{PREFIX}r:{name}", "total")
            found[level] = (None if settled is None else int(settled), int(reserved or 0))
        return found
    finally:
        client.close()


def reap(stack: Stack) -> None:
    """The reaper, as Celery beat runs it, at a moment past every deadline: the traffic is over,
    so only reservations of calls whose worker died are left."""
    stack.django(f"from analytics.reaper import reservations_reap\nimport time\n"
                 f"reservations_reap(now=time.time() + {RESERVATION_TTL_S + 5})")


def rows(stack: Stack, tenant: Tenant) -> list[tuple]:
    return stack.postgres.query(
        "SELECT request_id, status, request_body->'messages'->0->>'content', attempts FROM analytics_requestlog "
        "WHERE org_id = %s", [tenant.org_id])


def wait_for_rows(stack: Stack, traffic: Traffic) -> None:
    """Rows of calls refused while the database was away are committed once it is back."""
    answered = {o.request_id for o in traffic.outcomes if o.request_id}
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        logged = {rid for (rid,) in stack.postgres.query("SELECT request_id FROM analytics_requestlog")}
        if answered <= logged:
            return
        time.sleep(0.2)


def check_the_promises(stack: Stack, traffic: Traffic, tenants: list[Tenant], *, connections_lost: bool = False):
    wait_for_rows(stack, traffic)
    reap(stack)
    logged = {rid for (rid,) in stack.postgres.query("SELECT request_id FROM analytics_requestlog")}
    upstream = [request.json["messages"][0]["content"] for request in stack.upstream.requests]

    lost = [o.code for o in traffic.outcomes if o.status is None]
    statuses = {(o.status, o.code) for o in traffic.outcomes if o.status is not None}
    assert statuses <= {(200, None), (402, "budget_exceeded"), (503, "database_unavailable"),
                        (503, "counters_unavailable")}, statuses
    assert connections_lost or not lost, lost[:5]
    # Every answer has its row.
    assert {o.request_id for o in traffic.outcomes if o.request_id} <= logged
    # Every upstream call has exactly one row: its own (the prompt is stored), or the reaper's
    # for a call whose worker died (which has no prompt to show).
    for tenant in tenants:
        tenant_rows = rows(stack, tenant)
        by_marker = [content for _, _, content, _ in tenant_rows if content]
        reaped = [rid for rid, _, _, attempts in tenant_rows if attempts and attempts[0]["outcome"] == "worker_lost"]
        sent = [marker for marker in upstream if marker.startswith(tenant.name)]
        assert len(by_marker) == len(set(by_marker))
        assert len(sent) == len(set(sent))
        without_row = set(sent) - set(by_marker)
        assert len(without_row) <= len(reaped), (without_row, reaped)
        assert {o.marker for o in traffic.by_tenant(tenant) if o.status == 200} <= set(sent)
        # Spend within every budget, counters equal to the log, nothing left reserved.
        for level, (_, column, owner_id) in buckets(tenant).items():
            spent = ledger(stack, column, owner_id)
            limit = tenant.credits if level == "credits" else tenant.budgets.get(level)
            assert limit is None or spent <= limit, (tenant.name, level, spent, limit)
        for level, (settled, reserved) in counters(stack, tenant).items():
            _, column, owner_id = buckets(tenant)[level]
            assert reserved == 0, (tenant.name, level)
            assert settled in (None, ledger(stack, column, owner_id)), (tenant.name, level, settled)
    assert stack.redis.client().zcard(f"{PREFIX}deadlines") == 0


def tenants_for(stack: Stack, fault: str) -> tuple[Tenant, Tenant]:
    tight = make_tenant(stack, f"tight{fault}", credits="5.00",
                        budgets={level: n * RESERVATION for level, n in TIGHT_BUDGETS.items()})
    steady = make_tenant(stack, f"steady{fault}", credits="50.00", budgets={"key": to_micros(Decimal("40.00"))})
    return tight, steady


def served(traffic: Traffic, tenant: Tenant) -> int:
    return sum(o.status == 200 for o in traffic.by_tenant(tenant))


def outcomes(traffic: Traffic, tenant: Tenant) -> Counter:
    """How the tenant's calls ended, (status, code) by count: what a failed check shows."""
    return Counter((o.status, o.code) for o in traffic.by_tenant(tenant))


def test_a_postgres_restart_under_traffic_loses_no_row_and_serves_nothing_unlogged(stack):
    tight, steady = tenants_for(stack, "pgrestart")

    traffic = run_traffic(stack, tight, steady, stack.postgres.restart)

    check_the_promises(stack, traffic, [tight, steady])
    assert served(traffic, tight) > 0 and served(traffic, steady) > 0, (outcomes(traffic, tight),
                                                                         outcomes(traffic, steady))


def test_a_redis_restart_under_traffic_keeps_every_budget(stack):
    tight, steady = tenants_for(stack, "redisrestart")

    traffic = run_traffic(stack, tight, steady, lambda: stack.redis.restart(down_s=0.5))

    check_the_promises(stack, traffic, [tight, steady])
    assert served(traffic, tight) > 0 and served(traffic, steady) > 0, (outcomes(traffic, tight),
                                                                         outcomes(traffic, steady))


def test_a_redis_flush_under_traffic_keeps_every_budget(stack):
    tight, steady = tenants_for(stack, "redisflush")

    traffic = run_traffic(stack, tight, steady, stack.redis.flush)

    check_the_promises(stack, traffic, [tight, steady])
    assert served(traffic, tight) > 0 and served(traffic, steady) > 0, (outcomes(traffic, tight),
                                                                         outcomes(traffic, steady))


def test_a_killed_worker_leaves_every_upstream_call_with_its_row(stack):
    tight, steady = tenants_for(stack, "kill")
    victim = stack.workers()[0]

    traffic = run_traffic(stack, tight, steady, lambda: os.kill(victim, signal.SIGKILL))

    check_the_promises(stack, traffic, [tight, steady], connections_lost=True)
    # Calls in flight on the victim were cut off (those at the upstream were logged by the reaper).
    assert any(o.status is None for o in traffic.outcomes)
    stack.wait_ready()
    assert victim not in stack.workers()
