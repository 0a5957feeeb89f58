"""The gateway through its database's and its Redis's outages: servers of the tests' own (see
tests/promises/faults/servers.py), stopped and restarted under the gateway. Nothing is served that could
not be logged, no row is lost, and no budget is passed."""

import asyncio
import threading
from decimal import Decimal

import django.db
import httpx
import pytest
from django.utils import timezone

from gateway import auth, log_rows
from gateway.recorder import Recorder
from money import from_micros
from tests.promises.budget.support import (
    ControlledOpenAI,
    Held,
    in_background,
    post_chat,
    priced_routing,
    reservation_micros,
    wait_until,
)

pytestmark = [pytest.mark.postgres, pytest.mark.redis]


@pytest.fixture
def fake(monkeypatch):
    monkeypatch.setenv("FAKE_OPENAI_KEY", "upstream-secret")
    with ControlledOpenAI() as upstream:
        yield upstream


@pytest.fixture
def log_to_own_postgres(own_postgres, monkeypatch):
    """The gateway's recorder commits into the test's own cluster (keys still load from the
    test database), which the test may stop and start."""
    own_postgres.ensure_running()
    monkeypatch.setattr(log_rows, "connection_params", own_postgres.connection_params)
    own_postgres.query("DELETE FROM analytics_requestlog")
    yield own_postgres
    own_postgres.ensure_running()


def log_row(request_id: str) -> dict:
    return {"request_id": request_id, "created": timezone.now(), "org_id": 1, "key_prefix": "sk-nemo-test",
            "model": "gpt-4o", "status": 200, "cost": Decimal("0.000100")}


def logged_ids(cluster) -> list[str]:
    return sorted(request_id for (request_id,) in cluster.query("SELECT request_id FROM analytics_requestlog"))


@pytest.mark.django_db(transaction=True)
def test_the_recorder_recovers_on_its_own_after_its_database_restarts(log_to_own_postgres):
    cluster = log_to_own_postgres

    async def write() -> list:
        writer = Recorder()
        await writer.record(log_row("before"))
        await asyncio.to_thread(cluster.stop)
        waiting = asyncio.gather(*(writer.record(log_row(f"during-{n}")) for n in range(3)), return_exceptions=True)
        # The rows wait for the database, however long it is away (longer than any retry count).
        await asyncio.sleep(2.5)
        await asyncio.to_thread(cluster.start)
        outcomes = await waiting
        await asyncio.to_thread(cluster.restart)
        outcomes += await asyncio.gather(writer.record(log_row("after")), return_exceptions=True)
        await writer.close()
        return outcomes

    outcomes = asyncio.run(write())

    assert outcomes == [None] * 4
    assert logged_ids(cluster) == ["after", "before", "during-0", "during-1", "during-2"]


@pytest.mark.django_db(transaction=True)
def test_the_recorder_says_its_database_is_away_until_it_answers_again(log_to_own_postgres):
    cluster = log_to_own_postgres

    async def watch() -> list[bool]:
        writer = Recorder()
        await writer.record(log_row("before"))
        seen = [writer.available]
        await asyncio.to_thread(cluster.stop)
        waiting = asyncio.ensure_future(writer.record(log_row("during")))
        await asyncio.sleep(0.5)
        seen.append(writer.available)
        await asyncio.to_thread(cluster.start)
        await waiting
        seen.append(writer.available)
        await writer.close()
        return seen

    assert asyncio.run(watch()) == [True, False, True]


def test_while_the_database_is_away_calls_are_refused_before_the_upstream(start_gateway, make_tenant, fake,
                                                                          log_to_own_postgres):
    """The call already at the upstream when the database goes waits for its row; new calls
    get a 503 and reach no upstream; once the database is back, every row is in."""
    cluster = log_to_own_postgres
    tenant = make_tenant()
    gateway = start_gateway(priced_routing(fake))
    writer = gateway.app._state.recorder
    primed = post_chat(gateway, tenant.secret)

    release = Held(released=threading.Event())
    fake.script(release)
    served = in_background(post_chat, gateway, tenant.secret)
    wait_until(lambda: fake.count == 2, what="the second call to reach the upstream")
    cluster.stop()
    release.released.set()
    wait_until(lambda: not writer.available, what="the recorder to find its database gone")
    refused = post_chat(gateway, tenant.secret)
    cluster.start()
    served_status, served_headers, _ = served()
    wait_until(lambda: len(logged_ids(cluster)) == 3, what="every row to be committed")

    assert (primed[0], served_status) == (200, 200)
    assert (refused[0], refused[2]["error"]["code"], refused[1]["retry-after"]) == (503, "database_unavailable", "1")
    assert fake.count == 2
    assert logged_ids(cluster) == sorted(headers["x-nemo-request-id"]
                                         for headers in (primed[1], served_headers, refused[1]))
    assert cluster.query("SELECT status FROM analytics_requestlog WHERE request_id = %s",
                         [refused[1]["x-nemo-request-id"]]) == [(503,)]


@pytest.fixture
def gateway_on_own_redis(own_redis, start_gateway, settings, fake):
    settings.REDIS_URL = own_redis.url
    return start_gateway(priced_routing(fake))


def test_a_redis_restart_costs_a_call_a_wait_not_an_error(gateway_on_own_redis, own_redis, make_tenant, fake):
    tenant = make_tenant()
    assert post_chat(gateway_on_own_redis, tenant.secret)[0] == 200

    own_redis.stop()
    during = in_background(post_chat, gateway_on_own_redis, tenant.secret)
    threading.Event().wait(1.0)
    own_redis.start()

    assert during()[0] == 200
    assert fake.count == 2


def test_calls_in_flight_keep_their_reservations_across_a_redis_restart(gateway_on_own_redis, own_redis,
                                                                        make_tenant, fake):
    """Redis comes back empty; the calls in flight are put back before anything more is
    admitted, so the budget, which fits two of them, refuses a third."""
    tenant = make_tenant(key_budget=from_micros(2 * reservation_micros() + reservation_micros() // 2))
    release = Held(released=threading.Event())
    fake.script(release, release)
    in_flight = [in_background(post_chat, gateway_on_own_redis, tenant.secret) for _ in range(2)]
    wait_until(lambda: fake.count == 2, what="both calls to reach the upstream")

    own_redis.restart()
    third = post_chat(gateway_on_own_redis, tenant.secret)
    release.released.set()

    assert (third[0], third[2]["error"]["param"]) == (402, "key")
    assert [join()[0] for join in in_flight] == [200, 200]
    assert fake.count == 2


def test_a_key_that_cannot_be_checked_while_the_database_is_away_is_refused_with_a_503(start_gateway, make_tenant,
                                                                                       fake, monkeypatch):
    def database_away(prefix):
        raise django.db.OperationalError("connection refused")

    monkeypatch.setattr(auth, "_load_snapshot", database_away)
    tenant = make_tenant()
    gateway = start_gateway(priced_routing(fake))

    chat = post_chat(gateway, tenant.secret)
    models = httpx.get(f"{gateway.url}/v1/models", headers={"Authorization": f"Bearer {tenant.secret}"})

    assert (chat[0], chat[2]["error"]["code"], chat[1]["retry-after"]) == (503, "database_unavailable", "1")
    assert (models.status_code, models.json()["error"]["code"]) == (503, "database_unavailable")
    assert fake.count == 0
