"""The export tasks in a real Celery worker: a separate process, a Redis broker, committed rows."""

import os
import subprocess
import sys
import time
import uuid
from datetime import timedelta
from pathlib import Path

import pytest
from django.conf import settings
from django.db import connection
from django.utils import timezone

from analytics.services import sink_create
from analytics.tasks import export_sink
from nemo.celery import app as celery_app
from tests.analytics.factories import make_log
from tests.analytics.fakes import FakeDatadog, FakeOtlpCollector

ROOT = Path(__file__).resolve().parents[2]


def database_url() -> str:
    db = connection.settings_dict
    password = f":{db['PASSWORD']}" if db["PASSWORD"] else ""
    return f"postgres://{db['USER']}{password}@{db['HOST']}:{db['PORT'] or 5432}/{db['NAME']}"


def start_worker(queue: str, log: Path, **settings_env: str) -> subprocess.Popen:
    """A Celery worker of its own taking ``queue``, with these settings in its environment."""
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "nemo.settings",
        "DATABASE_URL": database_url(),
        "REDIS_URL": settings.REDIS_URL,
        "CELERY_BROKER_URL": settings.CELERY_BROKER_URL,
        # The fake sink listens on 127.0.0.1.
        "NEMO_SINK_ALLOW_PRIVATE": "true",
        **settings_env,
    }
    command = [sys.executable, "-m", "celery", "-A", "nemo", "worker", "--pool", "solo", "--queues", queue,
               "--without-gossip", "--without-mingle", "--without-heartbeat", "--loglevel", "info"]
    return subprocess.Popen(command, cwd=ROOT, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT)


def wait_for(condition, timeout: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.2)
    return condition()


@pytest.mark.redis
@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("private_sinks")
def test_a_real_worker_exports_the_committed_log_to_the_sink(org, key, system_actor, monkeypatch, tmp_path):
    rows = [make_log(org, key, inserted=timezone.now() - timedelta(minutes=1)) for _ in range(3)]
    queue = f"nemo-test-{uuid.uuid4().hex}"
    # The settings name it so (namespace CELERY), and that name wins over "task_always_eager".
    monkeypatch.setitem(celery_app.conf, "CELERY_TASK_ALWAYS_EAGER", False)
    with FakeDatadog() as datadog:
        sink = sink_create(org=org, type="datadog", config={"url": datadog.url, "api_key": datadog.api_key},
                           actor=system_actor)
        worker = start_worker(queue, tmp_path / "worker.log")
        try:
            export_sink.apply_async(args=[sink.pk], queue=queue)
            delivered = wait_for(lambda: len(datadog.entries) >= 3)
        finally:
            worker.terminate()
            worker.wait(timeout=30)

    sink.refresh_from_db()
    assert delivered, (tmp_path / "worker.log").read_text()[-3000:]
    assert datadog.entries_by_request() == {row.request_id: 1 for row in rows}
    assert sink.last_exported_id == rows[-1].pk
    assert datadog.problems == []


@pytest.mark.redis
@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("private_sinks")
def test_a_real_worker_exports_a_run_as_one_trace_to_an_otlp_collector(org, key, system_actor, monkeypatch, tmp_path):
    rows = [make_log(org, key, run_id="run-7", inserted=timezone.now() - timedelta(minutes=1)) for _ in range(3)]
    queue = f"nemo-test-{uuid.uuid4().hex}"
    monkeypatch.setitem(celery_app.conf, "task_always_eager", False)
    with FakeOtlpCollector(headers={"x-collector-token": "t-1"}) as collector:
        sink = sink_create(org=org, type="otlp", config={"url": collector.url, "headers": {"x-collector-token": "t-1"}},
                           actor=system_actor)
        worker = start_worker(queue, tmp_path / "worker.log")
        try:
            export_sink.apply_async(args=[sink.pk], queue=queue)
            delivered = wait_for(lambda: len(collector.spans) >= 4)
        finally:
            worker.terminate()
            worker.wait(timeout=30)

    sink.refresh_from_db()
    assert delivered, (tmp_path / "worker.log").read_text()[-3000:]
    assert collector.problems == []
    assert sorted(span.name for span in collector.spans) == ["chat gemini-2.5-flash"] * 3 + ["invoke_agent"]
    assert len({span.trace_id for span in collector.spans}) == 1
    assert sink.last_exported_id == rows[-1].pk


@pytest.mark.redis
@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_a_real_worker_rolls_the_committed_log_up(org, key, monkeypatch, tmp_path):
    from decimal import Decimal

    from analytics.models import DailySpend
    from analytics.selectors import spend_total
    from analytics.tasks import roll_up_spend

    for cost in ("0.125", "0.25", "0.5"):
        make_log(org, key, cost=Decimal(cost))
    queue = f"nemo-test-{uuid.uuid4().hex}"
    monkeypatch.setitem(celery_app.conf, "CELERY_TASK_ALWAYS_EAGER", False)
    worker = start_worker(queue, tmp_path / "worker.log")
    try:
        roll_up_spend.apply_async(queue=queue)
        rolled = wait_for(lambda: DailySpend.objects.filter(org=org, calls=3).exists())
    finally:
        worker.terminate()
        worker.wait(timeout=30)

    assert rolled, (tmp_path / "worker.log").read_text()[-3000:]
    assert DailySpend.objects.get(org=org).cost == Decimal("0.875")
    assert spend_total(org_id=org.pk) == Decimal("0.875")  # rolled up, not counted twice with the tail
