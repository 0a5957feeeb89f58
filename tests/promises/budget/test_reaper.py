"""A worker killed mid-call leaves its reservation behind; the reaper releases it, exactly once.

The gateway runs as a real separate process (uvicorn serving ``nemo.asgi:application``) on the
test database and Redis, so that it can be SIGKILLed while the upstream hangs.
"""

import asyncio
import math
import os
import socket
import subprocess
import sys
import threading
import time
from decimal import Decimal
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest
import redis
import yaml
from django.conf import settings as django_settings
from django.db import connection

from analytics.models import RequestLog
from analytics.tasks import reap_reservations
from billing.reservations import RESERVATION_TTL_S
from counters import counter_store_from_url
from gateway.recorder import Recorder
from money import to_micros
from tests.fakes.behaviours import Hang
from tests.promises.budget.support import (
    BODY,
    ControlledOpenAI,
    bucket_of,
    counters,
    in_background,
    ledger_micros,
    post_chat,
    priced_routing,
    reservation_micros,
    reservations_left,
    wait_until,
)

pytestmark = [pytest.mark.postgres, pytest.mark.redis]

PROJECT = Path(__file__).resolve().parents[3]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _test_database_url() -> str:
    db = connection.settings_dict
    auth = quote(db["USER"]) + (f":{quote(db['PASSWORD'])}" if db["PASSWORD"] else "")
    return f"postgres://{auth}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"


class WorkerProcess:
    def __init__(self, routing_file: Path, redis_prefix: str) -> None:
        self.url = f"http://127.0.0.1:{_free_port()}"
        env = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "nemo.settings",
            "DATABASE_URL": _test_database_url(),
            "REDIS_URL": django_settings.REDIS_URL,
            "NEMO_REDIS_PREFIX": redis_prefix,
            "NEMO_ROUTER_CONFIG": str(routing_file),
        }
        self.process = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "nemo.asgi:application", "--host", "127.0.0.1",
             "--port", self.url.rsplit(":", 1)[1], "--lifespan", "on", "--log-level", "warning"],
            cwd=PROJECT, env=env,
        )

    def post(self, secret: str) -> httpx.Response:
        return httpx.post(f"{self.url}/v1/chat/completions", content=BODY, timeout=30,
                          headers={"Authorization": f"Bearer {secret}", "Content-Type": "application/json"})

    def wait_ready(self, secret: str) -> None:
        def answers() -> bool:
            assert self.process.poll() is None, "the gateway process exited"
            try:
                return httpx.get(f"{self.url}/v1/models", headers={"Authorization": f"Bearer {secret}"}).is_success
            except httpx.TransportError:
                return False

        wait_until(answers, timeout_s=30, what="the gateway process")


@pytest.fixture
def start_worker(transactional_db, tmp_path, redis_prefix):
    started: list[WorkerProcess] = []

    def start(routing: dict) -> WorkerProcess:
        routing_file = tmp_path / "routing.yaml"
        routing_file.write_text(yaml.safe_dump(routing))
        started.append(WorkerProcess(routing_file, redis_prefix))
        return started[-1]

    yield start
    for worker in started:
        worker.process.kill()
        worker.process.wait()
    client = redis.Redis.from_url(django_settings.REDIS_URL)
    for key in client.scan_iter(match=f"{redis_prefix}*"):
        client.delete(key)
    client.close()


@pytest.fixture
def fake(monkeypatch):
    monkeypatch.setenv("FAKE_OPENAI_KEY", "upstream-secret")
    with ControlledOpenAI() as upstream:
        yield upstream


def on_store(redis_prefix: str, use):
    """Runs ``use(store)`` on the shared counter store, as another worker would see it."""

    async def run():
        store = counter_store_from_url(django_settings.REDIS_URL, prefix=redis_prefix)
        try:
            return await use(store)
        finally:
            await store.close()

    return asyncio.run(run())


def reap_concurrently(now: float, reapers: int = 2) -> list[list[str]]:
    start = threading.Barrier(reapers)

    def reap() -> list[str]:
        start.wait()
        return reap_reservations(now=now)

    joins = [in_background(reap) for _ in range(reapers)]
    return [join() for join in joins]


def test_a_killed_workers_call_is_logged_and_charged_its_reservation_once_by_the_reaper(
    start_worker, make_tenant, fake, redis_prefix
):
    tenant = make_tenant(key_budget=Decimal("3.00"))
    names = [bucket_of("key", tenant), bucket_of("credits", tenant)]
    worker = start_worker(priced_routing(fake))
    worker.wait_ready(tenant.secret)
    assert worker.post(tenant.secret).status_code == 200
    fake.script(Hang())
    dying_call = in_background(worker.post, tenant.secret)
    wait_until(lambda: fake.count == 2, what="the second call to reach the upstream")
    pending = on_store(redis_prefix, lambda store: store.due(now=math.inf))
    held = on_store(redis_prefix, lambda store: store.read(names))

    worker.process.kill()
    worker.process.wait()

    with pytest.raises(httpx.TransportError):
        dying_call()
    assert (len(pending), held) == (1, {name: ledger_micros(org=tenant.org) + reservation_micros() for name in names})
    # Before its deadline a reservation may belong to a call still running: it stays.
    assert reap_reservations(now=time.time()) == []
    past_deadline = time.time() + RESERVATION_TTL_S + 1
    assert sorted(sum(reap_concurrently(past_deadline), [])) == pending
    assert reap_reservations(now=past_deadline) == []
    # The call reached the upstream, so it has its row: what it reserved is what it costs.
    lost = RequestLog.objects.get(request_id=pending[0])
    assert (lost.status, lost.attempts[0]["outcome"], lost.endpoint) == (500, "worker_lost", "chat.completions")
    assert to_micros(lost.cost) == reservation_micros()
    assert (lost.key_id, lost.org_id, lost.model, lost.deployment) == (tenant.key.pk, tenant.org.pk, "gpt-4o", "")
    assert RequestLog.objects.filter(org=tenant.org).count() == fake.count == 2
    assert on_store(redis_prefix, lambda store: store.read(names)) == {name: ledger_micros(org=tenant.org)
                                                                       for name in names}
    assert on_store(redis_prefix, lambda store: store.due(now=math.inf)) == []
    # The dead call's own settle, should it come after all, charges nothing more.
    assert on_store(redis_prefix, lambda store: store.settle_many([(pending[0], 5, 5, names)])) == [True]
    assert on_store(redis_prefix, lambda store: store.read(names)) == {name: ledger_micros(org=tenant.org)
                                                                       for name in names}


def test_a_call_logged_but_never_settled_is_settled_by_the_reaper_at_its_cost(start_gateway, make_tenant, fake):
    """The worker died between committing a call's row and sending its settle: the reservation
    is left, and the ledger holds the cost. The reaper settles it with that cost, so the budget
    counters match the ledger again without waiting for a rebuild, and counts it once."""
    tenant = make_tenant(key_budget=Decimal("3.00"))
    names = [bucket_of("key", tenant), bucket_of("credits", tenant)]
    gateway = start_gateway(priced_routing(fake))
    assert post_chat(gateway, tenant.secret)[0] == 200
    send_settle = Recorder._start_settle
    Recorder._start_settle = lambda writer, settlements, position: None  # the worker "dies" after its commit
    try:
        status, headers, _ = post_chat(gateway, tenant.secret)
    finally:
        Recorder._start_settle = send_settle
    request_id = headers["x-nemo-request-id"]

    assert (status, reservations_left(gateway)) == (200, [request_id])
    assert RequestLog.objects.filter(request_id=request_id).exists()
    assert counters(gateway, names) == {name: ledger_micros(org=tenant.org) - to_micros(
        RequestLog.objects.get(request_id=request_id).cost) + reservation_micros() for name in names}
    assert reap_reservations(now=time.time()) == []
    past_deadline = time.time() + RESERVATION_TTL_S + 1
    assert sorted(sum(reap_concurrently(past_deadline), [])) == [request_id]
    assert counters(gateway, names) == {name: ledger_micros(org=tenant.org) for name in names}
    assert reservations_left(gateway) == []
    # The dead worker's settle cannot count the call a second time.
    assert gateway.on_loop(lambda state: state.store.settle_many([(request_id, 5, 5, names)])) == [True]
    assert counters(gateway, names) == {name: ledger_micros(org=tenant.org) for name in names}
