"""SIGTERM drains a worker: its calls in flight finish, whole and logged, before it exits, and
``/readyz`` answers 503 meanwhile. Under a real gunicorn with two uvicorn workers, whose
settings (``gunicorn.conf.py``) give the drain its time."""

import asyncio
import signal
import sys
import threading
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from analytics.models import RequestLog
from tests.fakes.openai import FakeOpenAI
from tests.gateway.conftest import openai_routing
from tests.promises.budget.support import wait_until

STREAMS = 50
PROJECT = __file__.rsplit("/tests/", 1)[0]


def gunicorn(workers: int) -> list[str]:
    return [sys.executable, "-m", "gunicorn", "nemo.asgi:application", "-c", f"{PROJECT}/gunicorn.conf.py",
            "-k", "uvicorn_worker.UvicornWorker", "-w", str(workers), "-b", "127.0.0.1:{port}",
            "--log-level", "warning"]


def readyz(url: str) -> int | None:
    try:
        return httpx.get(f"{url}/readyz", timeout=5).status_code
    except httpx.HTTPError:
        return None


@pytest.mark.redis
@pytest.mark.postgres
def test_sigterm_lets_50_open_streams_finish_and_readyz_fails_meanwhile(start_gateway_process, make_tenant,
                                                                        monkeypatch, tmp_path):
    monkeypatch.setenv("FAKE_OPENAI_KEY", "k")
    env = {"NEMO_DRAIN_GRACE_S": "120", "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "metrics")}
    tenant = make_tenant()
    opened = threading.Semaphore(0)

    def stream(n: int) -> tuple[str, str]:
        chunks = gateway.client(tenant.secret).chat.completions.create(
            model="gpt-4o", messages=[{"role": "user", "content": f"stream number {n}"}], stream=True,
            max_tokens=50, stream_options={"include_usage": True})
        text, finish = "", ""
        for number, chunk in enumerate(chunks):
            if number == 0:
                opened.release()
            for choice in chunk.choices:
                text += choice.delta.content or ""
                finish = choice.finish_reason or finish
        return text, finish

    with FakeOpenAI() as upstream:
        upstream.hold_streams = threading.Event()
        gateway = start_gateway_process(openai_routing(upstream.base_url), env=env, command=gunicorn(2))
        wait_until(lambda: readyz(gateway.url) == 200, what="the workers to be ready", timeout_s=60)
        with ThreadPoolExecutor(STREAMS) as pool:
            streams = [pool.submit(stream, n) for n in range(STREAMS)]
            for _ in range(STREAMS):
                assert opened.acquire(timeout=60), "a stream did not open"
            gateway.process.send_signal(signal.SIGTERM)
            wait_until(lambda: readyz(gateway.url) == 503, what="/readyz to answer 503 while draining",
                       timeout_s=30)
            assert gateway.process.poll() is None
            upstream.hold_streams.set()
            answers = [done.result(timeout=120) for done in streams]
        gateway.process.wait(timeout=60)

    assert all(finish == "stop" and f"stream number {n}" in text for n, (text, finish) in enumerate(answers))
    rows = RequestLog.objects.filter(org=tenant.org)
    assert rows.count() == STREAMS
    assert set(rows.values_list("status", flat=True)) == {200}
    assert all(row.completion_tokens > 0 for row in rows)
    assert gateway.process.returncode == 0


@pytest.mark.redis
@pytest.mark.postgres
def test_a_call_still_running_when_the_grace_period_ends_is_cut_and_logged(start_gateway, make_tenant, settings,
                                                                           monkeypatch):
    monkeypatch.setenv("FAKE_OPENAI_KEY", "k")
    settings.NEMO_DRAIN_GRACE_S = 0.5
    tenant = make_tenant()
    opened, stopped = threading.Event(), threading.Event()

    def stream() -> str:
        chunks = gateway.client(tenant.secret).chat.completions.create(
            model="gpt-4o", messages=[{"role": "user", "content": "hello"}], stream=True, max_tokens=50)
        text = ""
        try:
            for chunk in chunks:
                opened.set()
                text += "".join(choice.delta.content or "" for choice in chunk.choices)
        except Exception:  # noqa: BLE001 - the stream was cut: what arrived is the answer
            pass
        return text

    with FakeOpenAI() as upstream:
        upstream.hold_streams = threading.Event()
        gateway = start_gateway(openai_routing(upstream.base_url))
        with ThreadPoolExecutor(1) as pool:
            cut = pool.submit(stream)
            assert opened.wait(timeout=30)
            drained = asyncio.run_coroutine_threadsafe(gateway.app.drain(stopped.set), gateway.app.loop)
            assert readyz(gateway.url) == 503
            drained.result(timeout=30)
            text = cut.result(timeout=30)
        upstream.hold_streams.set()

    assert stopped.is_set()
    assert "Fake answer" not in text
    wait_until(lambda: RequestLog.objects.filter(org=tenant.org).exists(), what="the cut call's row")
    row = RequestLog.objects.get(org=tenant.org)
    assert (row.status, row.error) == (503, "the gateway stopped before the call was done")
