"""The management API, served by the real ASGI app against PostgreSQL, keeps the database
connections it holds bounded however many clients call it, one after another or all at once.

Under ASGI every request runs in a context of its own, and a persistent connection
(``CONN_MAX_AGE`` > 0) stays open after the request that opened it: clients could exhaust the
server's ``max_connections``. So the server here runs the production settings, not the tests'.
"""

import os
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import psycopg
import pytest
from django.conf import settings
from django.db import connection

from billing.catalog import catalog_sync
from keys.audit import Actor
from keys.services import org_token_create, virtual_key_create

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]

PROJECT = Path(__file__).resolve().parents[2]
# The server's connections carry this name, so they are told apart from the test's own.
APPLICATION_NAME = "nemo-api-under-test"
PATHS = ["/api/v1/keys", "/api/v1/teams", "/api/v1/budgets", "/api/v1/logs", "/api/v1/spend"]
SEQUENTIAL_CALLS = 60
CLIENTS = 16
CALLS_PER_CLIENT = 10
# One client at a time needs one connection (the pool may open a second while handing one back).
MOST_CONNECTIONS_FOR_ONE_CLIENT = 2


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _database_url(**query: str) -> str:
    db = connection.settings_dict
    password = f":{db['PASSWORD']}" if db["PASSWORD"] else ""
    options = "&".join(f"{name}={value}" for name, value in query.items())
    return f"postgres://{db['USER']}{password}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}?{options}"


class ApiServer:
    """``uvicorn nemo.asgi:application`` with the production settings, as a worker serves it
    behind a TLS-terminating proxy."""

    def __init__(self) -> None:
        self.url = f"http://127.0.0.1:{_free_port()}"
        env = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "nemo.settings",
            "DATABASE_URL": _database_url(application_name=APPLICATION_NAME),
            "NEMO_TRUST_X_FORWARDED_PROTO": "true",
        }
        self.process = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "nemo.asgi:application", "--host", "127.0.0.1",
             "--port", self.url.rsplit(":", 1)[1], "--log-level", "warning"],
            cwd=PROJECT, env=env,
        )

    def wait_ready(self) -> None:
        deadline = time.monotonic() + 30
        while True:
            try:
                httpx.get(f"{self.url}/login/", timeout=1)
                return
            except httpx.TransportError:
                if time.monotonic() > deadline or self.process.poll() is not None:
                    raise RuntimeError("the API server did not start") from None
                time.sleep(0.1)

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


class ConnectionWatch:
    """Samples, from a thread of its own, how many connections the server holds."""

    def __init__(self) -> None:
        self.most = 0
        self._stop = threading.Event()
        self._connection = psycopg.connect(_database_url(), autocommit=True)
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def count(self) -> int:
        return self._connection.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND application_name = %s",
            [APPLICATION_NAME],
        ).fetchone()[0]

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.most = max(self.most, self.count())
            time.sleep(0.01)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def close(self) -> None:
        self._connection.close()


@pytest.fixture
def server():
    catalog_sync()
    api_server = ApiServer()
    try:
        api_server.wait_ready()
        yield api_server
    finally:
        api_server.stop()


@pytest.fixture
def token(org) -> str:
    virtual_key_create(org=org, name="agent", actor=Actor.system("test"))
    return org_token_create(org=org, name="script", actor=Actor.system("test"))[1]


@pytest.fixture
def watch():
    watcher = ConnectionWatch()
    yield watcher
    watcher.close()


def call_api(server: ApiServer, token: str, calls: int) -> list[int]:
    headers = {"Authorization": f"Bearer {token}", "X-Forwarded-Proto": "https"}
    with httpx.Client(base_url=server.url, headers=headers, timeout=30) as client:
        return [client.get(PATHS[number % len(PATHS)]).status_code for number in range(calls)]


def test_one_client_calling_again_and_again_leaves_no_connection_open(server, token, watch):
    with watch:
        statuses = call_api(server, token, SEQUENTIAL_CALLS)

    assert set(statuses) == {200}
    assert watch.most <= MOST_CONNECTIONS_FOR_ONE_CLIENT


def test_many_clients_at_once_hold_a_bounded_number_of_connections(server, token, watch):
    with watch, ThreadPoolExecutor(CLIENTS) as pool:
        statuses = [status for batch in pool.map(lambda _: call_api(server, token, CALLS_PER_CLIENT), range(CLIENTS))
                    for status in batch]

    assert statuses == [200] * CLIENTS * CALLS_PER_CLIENT
    assert watch.most <= settings.NEMO_DB_POOL_SIZE < CLIENTS
