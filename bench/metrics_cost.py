"""What recording a call's metrics costs the hot path: ``python -m bench.metrics_cost [single|mp]``.

``gateway.metrics.observe_call`` for a served call with one attempt, timed over many calls, in
the single-process registry (``single``) or prometheus-client's multiprocess mode (``mp``, the
memory-mapped files gunicorn's workers write). The calls run on an event loop, as a worker's do,
and their tally is flushed every ``CALLS_PER_FLUSH`` calls (a worker at 4,000 calls a second
flushes every 200: ``metrics.FLUSH_S``); the time is the calls' and the flushes'. Not part of
``make bench``: a micro-benchmark.
"""

import asyncio
import os
import sys
import tempfile
import time

MULTIPROCESS = len(sys.argv) > 1 and sys.argv[1] == "mp"
if MULTIPROCESS:
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="nemo-bench-metrics-")
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "nemo.settings_test")

import django  # noqa: E402

django.setup()

from gateway import metrics  # noqa: E402
from gateway.pipeline import Call  # noqa: E402
from gateway.router import Attempt  # noqa: E402

CALLS = 200_000
CALLS_PER_FLUSH = 200


async def measure() -> None:
    call = Call(request_id="req_bench", started=time.monotonic(), run_id="", endpoint="chat.completions",
                model="gpt-4o", deployment="primary", attempts=[Attempt("primary", "ok", 3)])
    call.summary.first_token_at = time.monotonic()
    models = {"gpt-4o": None}
    for _ in range(1000):
        metrics.observe_call(call, models)
    metrics.flush()
    started = time.perf_counter()
    for _ in range(CALLS // CALLS_PER_FLUSH):
        for _ in range(CALLS_PER_FLUSH):
            metrics.observe_call(call, models)
        metrics.flush()
    per_call_us = (time.perf_counter() - started) / CALLS * 1e6
    print(f"{'multiprocess' if MULTIPROCESS else 'single process'}: {per_call_us:.2f} µs per call "
          f"(a flush every {CALLS_PER_FLUSH} calls)")


def main() -> None:
    asyncio.run(measure())


if __name__ == "__main__":
    main()
