"""A real gateway for end-to-end tests: ``GatewayApp`` under uvicorn in a thread, with a routing
file pointing at fake upstreams, real counters (Redis when configured) and the test database.

The OpenAI Python package is the client, as it is for our users.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from decimal import Decimal

import openai
import pytest
import uvicorn
import yaml
from django.conf import settings as django_settings

from billing.catalog import catalog_sync
from billing.services import budget_set, organization_create_with_credits
from gateway.app import GatewayApp
from keys.audit import Actor
from keys.services import team_create, virtual_key_create


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class RunningGateway:
    def __init__(self, app: GatewayApp) -> None:
        self.app = app
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, lifespan="on", log_level="warning",
                                loop="asyncio")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def start(self) -> RunningGateway:
        self.thread.start()
        deadline = time.monotonic() + 15
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("the gateway did not start")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)

    def client(self, secret: str, **options) -> openai.OpenAI:
        return openai.OpenAI(base_url=f"{self.url}/v1", api_key=secret, max_retries=0, **options)

    def on_loop(self, coroutine_factory: Callable):
        """Runs ``coroutine_factory(state)`` on the gateway's own loop (its counter store lives
        there) and returns the result."""
        future = asyncio.run_coroutine_threadsafe(coroutine_factory(self.app._state), self.app.loop)
        return future.result(timeout=10)


@pytest.fixture
def redis_prefix(settings) -> str:
    prefix = f"nemo-test-{uuid.uuid4().hex[:10]}:"
    settings.NEMO_REDIS_PREFIX = prefix
    # A flush's recovery hold (counters/lua/epoch.lua), short: one gateway restores at once.
    settings.NEMO_RECOVERY_HOLD_S = 0.5
    return prefix


@pytest.fixture
def start_gateway(transactional_db, settings, tmp_path, redis_prefix) -> Iterator[Callable[..., RunningGateway]]:
    """``start_gateway(routing)`` serves a gateway with that routing file (a dict)."""
    running: list[RunningGateway] = []
    # Transactional tests empty every table afterwards, the catalog the migration loaded too.
    catalog_sync()

    def start(routing: dict | None = None) -> RunningGateway:
        if routing is not None:
            path = tmp_path / f"routing-{len(running)}.yaml"
            path.write_text(yaml.safe_dump(routing))
            settings.NEMO_ROUTER_CONFIG = str(path)
        else:
            settings.NEMO_ROUTER_CONFIG = None
        gateway = RunningGateway(GatewayApp()).start()
        running.append(gateway)
        return gateway

    yield start
    for gateway in running:
        gateway.stop()
    # A Redis Cluster is the test session's own (tests/conftest.py): nothing to clean up there.
    if django_settings.REDIS_URL and "+cluster://" not in django_settings.REDIS_URL:
        import redis

        client = redis.Redis.from_url(django_settings.REDIS_URL)
        keys = list(client.scan_iter(match=f"{redis_prefix}*", count=1000))
        if keys:
            client.delete(*keys)
        client.close()


@pytest.fixture
def gateway_events() -> Iterator[list[dict]]:
    """The lines of the gateway's structured log (``gateway.events``) as they are written, parsed
    from their JSON: one object a line."""
    import json
    import logging

    lines: list[dict] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.append(json.loads(record.getMessage()))

    handler = Collect(level=logging.DEBUG)
    logger = logging.getLogger("gateway.events")
    logger.addHandler(handler)
    yield lines
    logger.removeHandler(handler)


class Tenant:
    def __init__(self, org, key, secret: str) -> None:
        self.org = org
        self.key = key
        self.secret = secret


@pytest.fixture
def make_tenant(transactional_db) -> Callable[..., Tenant]:
    """An org with a key: ``make_tenant(credits=, key_budget=, team_budget=, org_budget=, **key_options)``."""
    actor = Actor.system("test")

    def make(
        name: str = "Agents Inc",
        *,
        credits: Decimal = Decimal("5.00"),
        key_budget: Decimal | None = None,
        team_budget: Decimal | None = None,
        org_budget: Decimal | None = None,
        period: str = "none",
        **key_options,
    ) -> Tenant:
        org = organization_create_with_credits(name=name, credits=credits, actor=actor)
        team = team_create(org=org, name="agents", actor=actor) if team_budget is not None else None
        key, secret = virtual_key_create(org=org, name="agent", team=team, actor=actor, **key_options)
        if key_budget is not None:
            budget_set(org=org, key=key, amount=key_budget, period=period, actor=actor)
        if team_budget is not None:
            budget_set(org=org, team=team, amount=team_budget, period=period, actor=actor)
        if org_budget is not None:
            budget_set(org=org, amount=org_budget, period=period, actor=actor)
        return Tenant(org, key, secret)

    return make


def openai_routing(fake_base_url: str, *, chain_of: dict[str, str] | None = None, **deployment_extra) -> dict:
    """One OpenAI-compatible provider and a model ``gpt-4o`` served by it."""
    return {
        "providers": {"primary": {"type": "openai", "base_url": fake_base_url, "api_key_env": "FAKE_OPENAI_KEY"}},
        "deployments": [{"id": "gpt4o-primary", "provider": "primary", "model": "gpt-4o", **deployment_extra}],
        "models": {"gpt-4o": {"chain": ["gpt4o-primary"]}},
    }


class GatewayProcess:
    """A gateway in a process of its own (``uvicorn nemo.asgi:application``), as a worker runs."""

    def __init__(self, *, routing_path: str, redis_prefix: str, env: dict[str, str] | None = None,
                 command: list[str] | None = None, output=None) -> None:
        import os
        import subprocess
        import sys

        from django.db import connection

        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        db = connection.settings_dict
        env = {
            **os.environ,
            "DATABASE_URL": f"postgres://{db['USER']}@{db['HOST']}:{db['PORT']}/{db['NAME']}",
            "REDIS_URL": django_settings.REDIS_URL,
            "NEMO_REDIS_PREFIX": redis_prefix,
            "NEMO_ROUTER_CONFIG": routing_path,
            "DJANGO_SETTINGS_MODULE": "nemo.settings",
            **(env or {}),
        }
        command = command or [sys.executable, "-m", "uvicorn", "nemo.asgi:application", "--log-level", "warning",
                              "--host", "127.0.0.1", "--port", "{port}"]
        # ``output``: a file its stdout and stderr go to.
        self._output = open(output, "w") if output is not None else None  # noqa: SIM115 - closed in stop
        self.process = subprocess.Popen([part.format(port=self.port) for part in command], env=env,
                                        stdout=self._output, stderr=subprocess.STDOUT if self._output else None)
        deadline = time.monotonic() + 30
        while True:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    break
            except OSError:
                if time.monotonic() > deadline or self.process.poll() is not None:
                    self.stop()
                    raise RuntimeError("the gateway process did not start") from None
                time.sleep(0.1)

    def client(self, secret: str) -> openai.OpenAI:
        return openai.OpenAI(base_url=f"{self.url}/v1", api_key=secret, max_retries=0)

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except Exception:  # noqa: BLE001 - a stuck worker is killed
            self.process.kill()
        if self._output is not None:
            self._output.close()


@pytest.fixture
def start_gateway_process(transactional_db, tmp_path, redis_prefix) -> Iterator[Callable[..., GatewayProcess]]:
    """``start_gateway_process(routing, env=None, command=None)``: a separate worker process
    sharing the test's Redis; ``env``: more of its environment; ``command``: what serves it (uvicorn
    by default), ``{port}`` in it standing for its port; ``output``: a file for its stdout and stderr."""
    processes: list[GatewayProcess] = []

    def start(routing: dict, env: dict[str, str] | None = None, command: list[str] | None = None,
              output=None) -> GatewayProcess:
        path = tmp_path / f"routing-process-{len(processes)}.yaml"
        path.write_text(yaml.safe_dump(routing))
        process = GatewayProcess(routing_path=str(path), redis_prefix=redis_prefix, env=env, command=command,
                                 output=output)
        processes.append(process)
        return process

    catalog_sync()
    yield start
    for process in processes:
        process.stop()
