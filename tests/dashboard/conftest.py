"""Dashboard fixtures: signed-in clients for each role, keys, and request-log rows.

Log rows are written directly: these tests are about what the pages show, not about how the
gateway records a call. ``server`` runs the whole product for the browser tests.
"""

import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import timedelta
from decimal import Decimal
from pathlib import Path

import pytest
import uvicorn
from django.conf import settings as django_settings
from django.test import Client
from django.utils import timezone

from analytics.models import RequestLog
from billing.catalog import catalog_sync
from keys.models import Membership, VirtualKey
from keys.services import membership_add, virtual_key_create

CHROMIUM = "/usr/bin/chromium"
# Where the browser tests leave their screenshots (the test artifacts; ignored by git).
SCREENSHOTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "screenshots"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
PHONE = {"width": 390, "height": 844}
DESKTOP = {"width": 1366, "height": 900}


@pytest.fixture
def admin_user(django_user_model, org, system_actor):
    user = django_user_model.objects.create_user(username="admin@example.com", email="admin@example.com",
                                                 password="pw-admin-123")
    membership_add(org=org, user=user, role=Membership.Role.ADMIN, actor=system_actor)
    return user


def _signed_in(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


@pytest.fixture
def owner_client(owner, org) -> Client:
    return _signed_in(owner)


@pytest.fixture
def admin_client(admin_user) -> Client:
    return _signed_in(admin_user)


@pytest.fixture
def member_client(teammate, org) -> Client:
    return _signed_in(teammate)


@pytest.fixture
def outsider_client(outsider, other_org) -> Client:
    return _signed_in(outsider)


@pytest.fixture
def key(org, system_actor) -> VirtualKey:
    key, _ = virtual_key_create(org=org, name="researcher", actor=system_actor)
    return key


@pytest.fixture
def other_key(other_org, system_actor) -> VirtualKey:
    key, _ = virtual_key_create(org=other_org, name="their-agent", actor=system_actor)
    return key


@pytest.fixture
def make_log() -> Callable[..., RequestLog]:
    """``make_log(key, **fields)``: one call of ``key`` in the request log."""
    made = [0]

    def make(key: VirtualKey, **fields) -> RequestLog:
        made[0] += 1
        values = {
            "request_id": f"req_{uuid.uuid4().hex[:20]}",
            "org": key.org,
            "team": key.team,
            "key": key,
            "key_prefix": key.prefix,
            "model": "gemini-2.5-flash",
            "deployment": "flash-vertex",
            "provider": "vertex",
            "status": 200,
            "attempts": [{"deployment": "flash-vertex", "outcome": "ok", "latency_ms": 420}],
            "latency_ms": 420,
            "prompt_tokens": 1200,
            "completion_tokens": 300,
            "cost": Decimal("0.001110"),
            "finish_reason": "stop",
            # Rows a second apart keep the log's order the order they were made in.
            "created": timezone.now() - timedelta(minutes=5) + timedelta(seconds=made[0]),
        }
        values.update(fields)
        return RequestLog.objects.create(**values)

    return make


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def server(transactional_db, settings) -> Iterator[str]:
    """The whole product on a free port: ``/v1/*`` to the gateway, the rest to Django.

    ``nemo.asgi.application`` (the gateway in front of Django) under uvicorn in a thread, on the
    test database; the test is transactional so that thread sees what it commits."""
    # Imported here: building the gateway app is for the browser tests only.
    from nemo.asgi import application

    # Counters of earlier runs in the same Redis must not count against this run's keys.
    prefix = f"nemo-test-{uuid.uuid4().hex[:10]}:"
    settings.NEMO_REDIS_PREFIX = prefix
    settings.NEMO_ROUTER_CONFIG = None
    # Transactional tests empty every table afterwards, the catalog the migration loaded too.
    catalog_sync()
    port = _free_port()
    uvicorn_server = uvicorn.Server(uvicorn.Config(application, host="127.0.0.1", port=port, lifespan="on",
                                                   log_level="warning", loop="asyncio"))
    thread = threading.Thread(target=uvicorn_server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 15
    while not uvicorn_server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the server did not start"
        time.sleep(0.02)
    yield f"http://127.0.0.1:{port}"
    uvicorn_server.should_exit = True
    thread.join(timeout=10)
    if django_settings.REDIS_URL:
        import redis

        client = redis.Redis.from_url(django_settings.REDIS_URL)
        stale = list(client.scan_iter(match=f"{prefix}*", count=1000))
        if stale:
            client.delete(*stale)
        client.close()
