"""``/readyz`` follows the gateway's database and Redis: a 503 naming the one that is down while
it is, a 200 again once it answers. A gateway process on a PostgreSQL cluster and a Redis of the
test's own (tests/promises/faults/servers.py), stopped and started under it."""

import httpx
import pytest

from tests.gateway.conftest import openai_routing
from tests.promises.budget.support import wait_until

pytestmark = [pytest.mark.postgres, pytest.mark.redis]


def readiness(url: str) -> tuple[int, dict]:
    answer = httpx.get(f"{url}/readyz", timeout=30)
    return answer.status_code, answer.json()["checks"]


def test_readyz_fails_while_the_database_or_redis_is_down_and_recovers(start_gateway_process, own_postgres,
                                                                      own_redis):
    own_postgres.ensure_running()
    gateway = start_gateway_process(openai_routing("http://127.0.0.1:9/v1"),
                                    env={"DATABASE_URL": own_postgres.url, "REDIS_URL": own_redis.url})
    wait_until(lambda: readiness(gateway.url)[0] == 200, what="the gateway to be ready", timeout_s=60)

    own_postgres.stop()
    try:
        database_down = readiness(gateway.url)
    finally:
        own_postgres.start()
    wait_until(lambda: readiness(gateway.url)[0] == 200, what="readiness after the database", timeout_s=60)

    own_redis.stop()
    try:
        redis_down = readiness(gateway.url)
    finally:
        own_redis.start()
    wait_until(lambda: readiness(gateway.url)[0] == 200, what="readiness after Redis", timeout_s=60)

    assert database_down[0] == 503
    assert database_down[1]["database"].startswith("failed") and database_down[1]["counters"] == "ok"
    assert redis_down[0] == 503
    assert redis_down[1]["counters"].startswith("failed") and redis_down[1]["database"] == "ok"
    assert readiness(gateway.url) == (200, {"routing": "ok", "database": "ok", "counters": "ok"})
