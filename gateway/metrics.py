"""``GET /metrics``: the gateway's Prometheus metrics, all of its workers together.

What a call did is recorded once, at its end, from its ``Call`` (``observe_call``, called by the
pipeline's ``serve``): a few additions to this worker's tally, no I/O and no lock another worker
takes. The tally reaches prometheus-client's values at most ``FLUSH_S`` later, one increment per
label set and bucket for all the calls since the last flush (``flush``): in multiprocess mode each
increment takes a lock, checks the process id and writes the memory-mapped file, and six of them
a call were ~2.5% of a loaded worker's CPU. A scrape flushes its own worker's tally and, in
multiprocess mode, waits ``SCRAPE_WAIT_S`` for the other workers' to land, so it counts every call
that ended before it began. With ``PROMETHEUS_MULTIPROC_DIR`` set (``gunicorn.conf.py`` sets it for every
gunicorn master), prometheus-client keeps each worker's values in memory-mapped files of its
own there, and a scrape, whichever worker takes it, adds up every worker's files (its
multiprocess mode). Unset (one uvicorn process, the embedded default), they live in this
process's registry.

What the workers share is read when scraped, not recorded: each deployment's circuit and the
reservations outstanding from the counter store, each sink's export lag and failures from the
database.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import os
import time
from bisect import bisect_left
from typing import TYPE_CHECKING

from django.conf import settings
from prometheus_client import REGISTRY, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.multiprocess import MultiProcessCollector

from analytics.selectors import sinks_health
from gateway.db import db_read
from gateway.http import header, send_body, send_json

if TYPE_CHECKING:
    from gateway.pipeline import Call
    from gateway.state import GatewayState

logger = logging.getLogger(__name__)

CONTENT_TYPE = b"text/plain; version=0.0.4; charset=utf-8"
# A model no route serves is counted under this name: clients choose model names, and a label
# value each would grow the metrics without bound.
OTHER_MODEL = "other"
# How long a scrape waits for the counter store and the database, each.
SHARED_TIMEOUT_S = 2.0
# How long after a call its observations wait in the worker's tally, at most (loop lag aside);
# and how long a scrape waits for the other workers' tallies (several flushes' worth).
FLUSH_S = 0.05
SCRAPE_WAIT_S = 0.5
CIRCUIT_STATES = {"closed": 0, "open": 1, "half_open": 2}
# The refusals of a rate limit, by what limited: the key's own limits or every upstream's.
RATE_LIMIT_CODES = {"rate_limit_exceeded": "key", "upstream_rate_limited": "upstream"}

CALLS = Counter("nemo_calls", "Calls to the proxy, by endpoint, model, deployment and HTTP status.",
                ["endpoint", "model", "deployment", "status"])
LATENCY = Histogram("nemo_call_latency_seconds", "A call's latency, from its request to its end.",
                    ["endpoint", "model"], buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300))
TTFT = Histogram("nemo_call_ttft_seconds", "Time to a served call's first token (its answer, if not streamed).",
                 ["endpoint", "model"], buckets=(0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30))
ATTEMPTS = Counter("nemo_attempts", "Attempts at an upstream, by deployment and outcome.", ["deployment", "outcome"])
BUDGET_REFUSALS = Counter("nemo_budget_refusals", "Calls refused with a 402, by the budget level that refused.",
                          ["level"])
RATE_LIMIT_REFUSALS = Counter("nemo_rate_limit_refusals",
                              "Calls refused with a 429: by the key's rate limits, or every upstream's.", ["source"])
LOG_BATCH_ROWS = Histogram("nemo_log_batch_rows", "Rows in each group commit of the request log.",
                           buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256))
LOG_COMMIT_LAG = Histogram("nemo_log_commit_lag_seconds",
                           "From a group commit's first row taken from the queue to the batch committed.",
                           buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30))


def observe_call(call: Call, models: dict) -> None:
    """Records a finished call (``gateway.pipeline.Call``) in the tally; ``models``: the routes
    served, whose names are label values (any other model is ``OTHER_MODEL``)."""
    model = call.model if call.model in models else OTHER_MODEL
    key = (call.endpoint, model, call.deployment, call.status)
    children = _call_children.get(key)
    if children is None:
        children = _call_children[key] = (CALLS.labels(call.endpoint, model, call.deployment, str(call.status)),
                                          _child(LATENCY, call.endpoint, model), _child(TTFT, call.endpoint, model))
    calls, latency, ttft = children
    counts, observed = _tally.counts, _tally.observed
    _count(counts, calls)
    now = time.monotonic()
    _observe(observed, latency, now - call.started)
    first_token_at = call.summary.first_token_at
    if first_token_at is not None and call.status == 200:
        _observe(observed, ttft, first_token_at - call.started)
    for attempt in call.attempts:
        child = _child(ATTEMPTS, attempt.deployment, attempt.outcome)
        _count(counts, child)
    if call.error_code == "budget_exceeded":
        child = _child(BUDGET_REFUSALS, call.error_param)
        _count(counts, child)
    elif call.error_code in RATE_LIMIT_CODES:
        child = _child(RATE_LIMIT_REFUSALS, RATE_LIMIT_CODES[call.error_code])
        _count(counts, child)
    if now >= _tally.due:
        _tally.arm(now)


def observe_commit(rows: int, seconds: float) -> None:
    observed = _tally.observed
    _observe(observed, LOG_BATCH_ROWS, rows)
    _observe(observed, LOG_COMMIT_LAG, seconds)
    now = time.monotonic()
    if now >= _tally.due:
        _tally.arm(now)


def _count(counts: dict, child) -> None:
    counts[child] = counts.get(child, 0) + 1


def _observe(observed: dict, child, value: float) -> None:
    values = observed.get(child)
    if values is None:
        observed[child] = [value]
    else:
        values.append(value)


class _Tally:
    """This worker's observations since the last flush: increments by counter child, values by
    histogram child."""

    def __init__(self) -> None:
        self.counts: dict = {}
        self.observed: dict[object, list[float]] = {}
        # When an observation next arms a flush (the monotonic clock; 0: none is armed). A flush
        # armed and overdue is armed again: its loop may have stopped before it ran.
        self.due = 0.0

    def arm(self, now: float) -> None:
        """A flush in ``FLUSH_S``; at once outside an event loop (a management command, a test)."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self.flush()
            return
        self.due = now + FLUSH_S * 4
        loop.call_later(FLUSH_S, self.flush)

    def flush(self) -> None:
        self.due = 0.0
        counts, observed = self.counts, self.observed
        self.counts, self.observed = {}, {}
        for child, count in counts.items():
            child.inc(count)
        for child, values in observed.items():
            _observe_many(child, values)


def _observe_many(histogram, values: list[float]) -> None:
    """``histogram.observe`` of each value, as one increment of its sum and of each bucket they
    fall in (prometheus-client's own ``observe``: a value counts in the first bucket whose
    bound is at least the value; pinned in requirements.txt, and held to ``observe`` by
    tests/gateway/test_metrics.py)."""
    bounds, buckets = histogram._upper_bounds, histogram._buckets
    falls = [0] * len(bounds)
    for value in values:
        falls[bisect_left(bounds, value)] += 1
    histogram._sum.inc(sum(values))
    for bucket, count in zip(buckets, falls, strict=True):
        if count:
            bucket.inc(count)


_tally = _Tally()


def flush() -> None:
    """This worker's tally into prometheus-client's values now (a scrape, a worker that stops)."""
    _tally.flush()


# Each metric's children by their label values, found again without ``labels``' lock and checks
# (a third of the cost of recording a call).
_children: dict[tuple, object] = {}
# A call's count, latency and TTFT children together, by (endpoint, model, deployment, status):
# one lookup for the three.
_call_children: dict[tuple, tuple] = {}


def _child(metric, *values: str):
    key = (metric, *values)
    child = _children.get(key)
    if child is None:
        child = _children[key] = metric.labels(*values)
    return child


def multiprocess() -> bool:
    return bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))


async def handle(state: GatewayState, scope, send) -> None:
    """``GET /metrics``: the exposition, behind ``NEMO_METRICS_TOKEN`` when set."""
    if not authorized(header(scope, b"authorization"), settings.NEMO_METRICS_TOKEN):
        await send_json(send, 401, {"error": {"message": "GET /metrics needs the metrics token as a Bearer token.",
                                              "type": "authentication_error", "param": None,
                                              "code": "invalid_metrics_token"}})
        return
    flush()
    if multiprocess():
        # The other workers' tallies of the calls that ended before this scrape, flushed meanwhile.
        await asyncio.sleep(SCRAPE_WAIT_S)
    shared = await shared_gauges(state)
    # (Reading every worker's files is I/O: off the event loop.)
    body = await asyncio.to_thread(exposition, shared)
    await send_body(send, 200, body, CONTENT_TYPE)


def authorized(authorization: str | None, token: str | None) -> bool:
    if not token:
        return True
    given = authorization[7:].strip() if authorization and authorization.startswith("Bearer ") else ""
    return hmac.compare_digest(given.encode(), token.encode())


def exposition(shared: list[GaugeMetricFamily]) -> bytes:
    """Every worker's metrics (or this process's), then the shared state's gauges."""
    if multiprocess():
        registry = CollectorRegistry()
        MultiProcessCollector(registry)
    else:
        registry = REGISTRY
    return generate_latest(registry) + generate_latest(_Gauges(shared))


class _Gauges:
    """A registry-like holder of gauges already read (``generate_latest`` asks it to ``collect``)."""

    def __init__(self, families: list[GaugeMetricFamily]) -> None:
        self.families = families

    def collect(self):
        return iter(self.families)


async def shared_gauges(state: GatewayState) -> list[GaugeMetricFamily]:
    """What all workers share, read now; a part that cannot be read (Redis or the database
    away) is left out of this scrape and logged, the rest is answered."""
    families: list[GaugeMetricFamily] = []
    for read in (_store_gauges, _sink_gauges):
        try:
            families += await asyncio.wait_for(read(state), SHARED_TIMEOUT_S)
        except Exception as error:  # noqa: BLE001 - a scrape answers what it can
            logger.warning("/metrics could not read %s: %s", read.__name__.strip("_"), error)
    return families


async def _store_gauges(state: GatewayState) -> list[GaugeMetricFamily]:
    circuits = await state.store.circuits(sorted(state.config.deployments))
    circuit = GaugeMetricFamily("nemo_circuit_state", "Each deployment's circuit: 0 closed, 1 open, 2 half-open.",
                                labels=["deployment"])
    for deployment, value in circuits.items():
        circuit.add_metric([deployment], CIRCUIT_STATES.get(value, 1))
    outstanding = GaugeMetricFamily("nemo_reservations_outstanding",
                                    "Reservations of calls in flight, of every worker, not settled yet.",
                                    value=await state.store.reservations_outstanding())
    return [circuit, outstanding]


async def _sink_gauges(state: GatewayState) -> list[GaugeMetricFamily]:
    lag = GaugeMetricFamily("nemo_export_lag_seconds", "How long the oldest row of a sink's outbox has waited.",
                            labels=["sink", "type"])
    failures = GaugeMetricFamily("nemo_export_failures", "A sink's failed exports in a row (0: healthy).",
                                 labels=["sink", "type"])
    for sink in await db_read(sinks_health)():
        lag.add_metric([str(sink.sink_id), sink.type], sink.lag_s)
        failures.add_metric([str(sink.sink_id), sink.type], sink.consecutive_failures)
    return [lag, failures]
