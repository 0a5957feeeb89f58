"""``GET /metrics``: every worker's calls counted together (prometheus-client's multiprocess
mode), behind ``NEMO_METRICS_TOKEN``; the shared state's gauges read when scraped."""

import os
import subprocess
import sys
from decimal import Decimal

import httpx
import openai
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.fakes.behaviours import Status
from tests.fakes.openai import FakeOpenAI
from tests.gateway.conftest import openai_routing
from tests.gateway.test_fallback import two_link_routing

HELLO = [{"role": "user", "content": "hello"}]
TOKEN = "metrics-token-for-the-test"


def scrape(url: str, token: str | None = TOKEN) -> dict[tuple[str, tuple], float]:
    """``{(sample name, sorted labels): value}`` of a scrape."""
    headers = {"authorization": f"Bearer {token}"} if token else {}
    answer = httpx.get(f"{url}/metrics", headers=headers, timeout=30)
    assert answer.status_code == 200, answer.text
    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(answer.text) for sample in family.samples}


def value(samples: dict, name: str, **labels) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def calls_of(samples: dict) -> dict:
    return {key: count for key, count in samples.items() if key[0] == "nemo_calls_total"}


def call(worker, secret: str):
    """One call; the raw answer, or the error the client raised."""
    try:
        return worker.client(secret).chat.completions.with_raw_response.create(
            model="gpt-4o", messages=HELLO, max_tokens=5)
    except openai.APIStatusError as error:
        return error.response


@pytest.mark.redis
@pytest.mark.postgres
def test_metrics_count_the_calls_of_two_workers_together(start_gateway_process, make_tenant, monkeypatch, tmp_path):
    monkeypatch.setenv("FAKE_OPENAI_KEY", "k")
    shared_dir = tmp_path / "prometheus"
    shared_dir.mkdir()
    env = {"PROMETHEUS_MULTIPROC_DIR": str(shared_dir), "NEMO_METRICS_TOKEN": TOKEN}
    with FakeOpenAI() as primary, FakeOpenAI() as backup:
        routing = two_link_routing(primary, backup)
        first, second = start_gateway_process(routing, env=env), start_gateway_process(routing, env=env)
        tenant = make_tenant()
        broke = make_tenant("Broke Inc", key_budget=Decimal("0.000001"))
        limited = make_tenant("Limited Inc", rpm_limit=1)

        statuses = [call(first, tenant.secret).status_code, call(second, tenant.secret).status_code,
                    call(second, tenant.secret).status_code]
        primary.script(Status(500))
        fallback = call(first, tenant.secret)
        primary.script(Status(500))
        backup.script(Status(500))
        failed = call(second, tenant.secret)
        refused = call(first, broke.secret)
        statuses += [call(second, limited.secret).status_code, call(first, limited.secret).status_code]

        samples, other = scrape(first.url), scrape(second.url)

    # Either worker answers the scrape with every worker's counts.
    assert calls_of(other) == calls_of(samples)

    assert statuses == [200, 200, 200, 200, 429]
    assert fallback.status_code == 200 and fallback.headers["x-nemo-attempts"].endswith("backup:ok")
    assert failed.status_code == 502 and refused.status_code == 402
    calls = "nemo_calls_total"
    chat = {"endpoint": "chat.completions", "model": "gpt-4o"}
    assert value(samples, calls, **chat, deployment="primary", status="200") == 4
    assert value(samples, calls, **chat, deployment="backup", status="200") == 1
    assert value(samples, calls, **chat, deployment="", status="502") == 1
    assert value(samples, calls, **chat, deployment="", status="402") == 1
    assert value(samples, calls, **chat, deployment="", status="429") == 1
    assert value(samples, "nemo_budget_refusals_total", level="key") == 1
    assert value(samples, "nemo_rate_limit_refusals_total", source="key") == 1
    first_outcome = fallback.headers["x-nemo-attempts"].split(", ")[0].split(":")[1]
    assert value(samples, "nemo_attempts_total", deployment="primary", outcome="ok") == 4
    assert value(samples, "nemo_attempts_total", deployment="primary", outcome=first_outcome) == 2
    assert value(samples, "nemo_attempts_total", deployment="backup", outcome="ok") == 1
    assert value(samples, "nemo_attempts_total", deployment="backup", outcome=first_outcome) == 1
    # Every call is in the latency histogram, the served ones in time to first token.
    assert value(samples, "nemo_call_latency_seconds_count", **chat) == 8
    assert value(samples, "nemo_call_ttft_seconds_count", **chat) == 5
    assert value(samples, "nemo_call_latency_seconds_bucket", **chat, le="+Inf") == 8
    # The log writer's batches held every row written (the 429 and 402 are logged too).
    assert value(samples, "nemo_log_batch_rows_sum") == 8
    assert value(samples, "nemo_log_commit_lag_seconds_count") >= 1
    # The shared state, read at the scrape: two failures in 30 s open no circuit; nothing is in flight.
    assert value(samples, "nemo_circuit_state", deployment="primary") == 0
    assert value(samples, "nemo_circuit_state", deployment="backup") == 0
    assert value(samples, "nemo_reservations_outstanding") == 0


@pytest.mark.redis
@pytest.mark.postgres
def test_the_metrics_token_is_enforced_when_set(start_gateway, settings):
    settings.NEMO_METRICS_TOKEN = TOKEN
    gateway = start_gateway()

    assert httpx.get(f"{gateway.url}/metrics").status_code == 401
    wrong = httpx.get(f"{gateway.url}/metrics", headers={"authorization": "Bearer not-the-token"})
    assert wrong.status_code == 401
    assert wrong.json()["error"]["code"] == "invalid_metrics_token"
    answer = httpx.get(f"{gateway.url}/metrics", headers={"authorization": f"Bearer {TOKEN}"})
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("text/plain")
    assert "nemo_reservations_outstanding" in answer.text


@pytest.mark.redis
@pytest.mark.postgres
def test_without_a_token_metrics_are_open_and_show_the_shared_state(start_gateway, settings, make_tenant):
    import time

    from analytics.models import ExportSink

    settings.NEMO_METRICS_TOKEN = None
    tenant = make_tenant()
    sink = ExportSink.objects.create(org=tenant.org, type="s3", config={"bucket": "b"}, consecutive_failures=3)
    with FakeOpenAI() as primary, FakeOpenAI() as backup:
        gateway = start_gateway(two_link_routing(primary, backup))

        async def five_failures(state) -> None:
            for _ in range(5):
                await state.store.breaker_record("primary", False, time.time())

        gateway.on_loop(five_failures)
        samples = scrape(gateway.url, token=None)

    assert value(samples, "nemo_export_failures", sink=str(sink.pk), type="s3") == 3
    assert value(samples, "nemo_export_lag_seconds", sink=str(sink.pk), type="s3") == 0
    assert value(samples, "nemo_circuit_state", deployment="primary") == 1
    assert value(samples, "nemo_circuit_state", deployment="backup") == 0


@pytest.mark.redis
@pytest.mark.postgres
def test_under_gunicorn_every_scrape_counts_every_workers_calls(start_gateway_process, make_tenant, monkeypatch):
    """gunicorn.conf.py, with no PROMETHEUS_MULTIPROC_DIR given: the workers' calls are added up,
    whichever worker served them and whichever answers the scrape."""
    from tests.gateway.test_drain import gunicorn, readyz
    from tests.promises.budget.support import wait_until

    monkeypatch.setenv("FAKE_OPENAI_KEY", "k")
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)
    calls = 20
    with FakeOpenAI() as upstream:
        gateway = start_gateway_process(openai_routing(upstream.base_url), env={"NEMO_METRICS_TOKEN": TOKEN},
                                        command=gunicorn(2))
        wait_until(lambda: readyz(gateway.url) == 200, what="the workers to be ready", timeout_s=60)
        tenant = make_tenant()
        for _ in range(calls):
            # A connection each (openai's client would keep one): the workers share the calls.
            httpx.post(f"{gateway.url}/v1/chat/completions", headers={"Authorization": f"Bearer {tenant.secret}"},
                       json={"model": "gpt-4o", "max_tokens": 5, "messages": HELLO}, timeout=30).raise_for_status()
        counted = [value(scrape(gateway.url), "nemo_calls_total", endpoint="chat.completions", model="gpt-4o",
                         deployment="gpt4o-primary", status="200") for _ in range(10)]

    assert counted == [calls] * 10


# A gunicorn master reaps its workers in a SIGCHLD handler, and a second worker's signal can
# arrive while the first one's handler is still running (two workers that finish draining
# together, at every graceful shutdown). Here that second signal lands at the worst moment: while
# the first handler is inside prometheus-client's code, in the middle of importing it if it
# imports then (a nested import of a half-imported module is an ImportError, and the master
# exited 1 after a clean drain).
TWO_WORKERS_EXIT_TOGETHER = """
import os, runpy, sys
from pathlib import Path

conf = runpy.run_path(sys.argv[1])
conf["on_starting"](None)
directory = Path(os.environ["PROMETHEUS_MULTIPROC_DIR"])
for pid in (101, 102):
    (directory / f"gauge_livesum_{pid}.db").write_bytes(b"")
Worker = type("Worker", (), {})
first, second = Worker(), Worker()
first.pid, second.pid = 101, 102
nested = []

def second_signal(frame, event, arg):
    code = frame.f_code
    if event == "call" and "prometheus_client" in code.co_filename and not nested and (
            code.co_filename.endswith("metrics_core.py") or code.co_name == "mark_process_dead"):
        nested.append(code.co_name)
        sys.setprofile(None)
        conf["child_exit"](None, second)

sys.setprofile(second_signal)
conf["child_exit"](None, first)
sys.setprofile(None)
assert nested, "the second signal never came"
assert not list(directory.glob("gauge_livesum_*.db")), list(directory.iterdir())
"""


def test_two_workers_reaped_one_inside_the_other_both_leave_the_sums(tmp_path):
    from tests.gateway.test_drain import PROJECT

    script = tmp_path / "reap.py"
    script.write_text(TWO_WORKERS_EXIT_TOGETHER)
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "metrics")}
    done = subprocess.run([sys.executable, str(script), f"{PROJECT}/gunicorn.conf.py"], env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr


def test_a_tallied_histogram_reads_as_one_observed_value_by_value():
    """The tally's flush writes a histogram's sum and buckets straight into prometheus-client's
    child (its ``_sum``, ``_buckets`` and ``_upper_bounds``): what it shows must be what
    ``observe`` of each value shows, bounds themselves and values past the last bound included."""
    from prometheus_client import CollectorRegistry, Histogram

    from gateway.metrics import _observe_many

    registry = CollectorRegistry()
    buckets = (0.05, 0.1, 0.25, 1, 10)
    observed = Histogram("observed_seconds", "by observe", ["endpoint"], buckets=buckets, registry=registry)
    tallied = Histogram("tallied_seconds", "by the tally", ["endpoint"], buckets=buckets, registry=registry)
    values = [0.0, 0.01, 0.05, 0.050001, 0.1, 0.2, 0.25, 0.9, 1, 9.99, 10, 10.5, 400.0, 0.07, 0.07]
    for value in values:
        observed.labels("chat").observe(value)
    _observe_many(tallied.labels("chat"), values[:6])
    _observe_many(tallied.labels("chat"), values[6:])

    def samples(name):
        return {(s.name.removeprefix(name), tuple(sorted(s.labels.items()))): s.value
                for family in registry.collect() if family.name == name for s in family.samples
                if not s.name.endswith("_created")}

    by_observe, by_tally = samples("observed_seconds"), samples("tallied_seconds")
    assert by_tally.keys() == by_observe.keys() and len(by_tally) == len(buckets) + 3
    for key, value in by_observe.items():
        assert by_tally[key] == pytest.approx(value), key


def test_a_calls_metrics_land_within_the_flush_interval_without_a_scrape():
    import asyncio

    from gateway import metrics
    from gateway.pipeline import Call

    def calls_counted() -> float:
        return metrics.CALLS.labels("chat.completions", "tally-model", "tally-link", "200")._value.get()

    async def one_call() -> tuple[float, float, float]:
        before = calls_counted()
        call = Call(request_id="req_tally", started=0.0, run_id="", endpoint="chat.completions",
                    model="tally-model", deployment="tally-link")
        metrics.observe_call(call, {"tally-model": object()})
        tallied = calls_counted()
        await asyncio.sleep(metrics.FLUSH_S * 4)
        return before, tallied, calls_counted()

    before, tallied, flushed = asyncio.run(one_call())
    # Held in the worker's tally at first, in prometheus-client's values one flush later.
    assert tallied == before and flushed == before + 1


def test_a_flush_whose_loop_stopped_before_it_ran_is_armed_again():
    """A loop that ends with a flush pending (a worker's, a test gateway's) never runs it: the
    next loop's calls must still reach the values without a scrape."""
    import asyncio

    from gateway import metrics
    from gateway.pipeline import Call

    def calls_counted() -> float:
        return metrics.CALLS.labels("chat.completions", "rearm-model", "rearm-link", "200")._value.get()

    def one_call() -> None:
        call = Call(request_id="req_rearm", started=0.0, run_id="", endpoint="chat.completions",
                    model="rearm-model", deployment="rearm-link")
        metrics.observe_call(call, {"rearm-model": object()})

    async def stops_at_once() -> None:
        one_call()

    async def later() -> float:
        await asyncio.sleep(metrics.FLUSH_S * 5)
        one_call()
        await asyncio.sleep(metrics.FLUSH_S * 4)
        return calls_counted()

    before = calls_counted()
    asyncio.run(stops_at_once())
    assert asyncio.run(later()) == before + 2
