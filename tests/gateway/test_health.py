"""``/healthz`` answers while the process is up; ``/readyz`` says whether the gateway can serve:
its routing file loaded, the database and the counter store reachable."""

import socket

import httpx

from gateway import app as gateway_app


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_healthz_and_readyz_answer_without_a_key(start_gateway):
    gateway = start_gateway()

    assert httpx.get(f"{gateway.url}/healthz").json() == {"status": "ok"}
    ready = httpx.get(f"{gateway.url}/readyz")
    assert ready.status_code == 200
    assert ready.json() == {"status": "ready", "checks": {"routing": "ok", "database": "ok", "counters": "ok"}}


def test_readyz_is_a_503_naming_a_counter_store_it_cannot_reach(start_gateway, settings):
    shared = settings.REDIS_URL
    settings.REDIS_URL = f"redis://127.0.0.1:{free_port()}/0"
    try:
        gateway = start_gateway()
        ready = httpx.get(f"{gateway.url}/readyz", timeout=30)
    finally:
        # (The fixture's clean-up empties the shared Redis, whichever the test pointed at.)
        settings.REDIS_URL = shared
    assert ready.status_code == 503
    body = ready.json()
    assert body["status"] == "not ready"
    assert body["checks"]["counters"].startswith("failed")
    assert body["checks"]["database"] == "ok"
    # The process is up all the same.
    assert httpx.get(f"{gateway.url}/healthz").status_code == 200


def test_readyz_is_a_503_naming_a_database_that_does_not_answer(start_gateway, monkeypatch):
    gateway = start_gateway()

    # (The database of the test run cannot be taken away under Django's test connection; the
    # fault suite restarts a real one. Here its probe fails as a lost connection does.)
    async def lost() -> None:
        raise OSError("connection refused")

    monkeypatch.setattr(gateway_app, "_database_answers", lost)
    ready = httpx.get(f"{gateway.url}/readyz")
    assert ready.status_code == 503
    assert ready.json()["checks"] == {"routing": "ok", "database": "failed: OSError", "counters": "ok"}
