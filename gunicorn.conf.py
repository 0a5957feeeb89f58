"""gunicorn's settings for the gateway (read from the working directory by ``make serve``).

* Metrics: every worker writes its metrics to files of its own in ``PROMETHEUS_MULTIPROC_DIR``,
  and ``/metrics`` adds them up (gateway/metrics.py). Unset, a fresh directory is made for this
  master; either way its metric files (``*.db``) are removed at start, since an earlier run's
  would add to this one's.
* Drain: on SIGTERM a worker lets its calls in flight finish for up to ``NEMO_DRAIN_GRACE_S``
  (gateway/app.py); gunicorn kills workers still running after its graceful timeout, so that is
  set a little longer.
* Proxy headers: uvicorn's ``ProxyHeadersMiddleware`` is off (``post_worker_init``). By default it
  rewrote every request's client address and scheme from ``X-Forwarded-For`` and
  ``X-Forwarded-Proto`` when the peer was 127.0.0.1, whatever ``NEMO_TRUST_X_FORWARDED_FOR`` and
  ``NEMO_TRUST_X_FORWARDED_PROTO`` said, which are what decide whether those headers count (the
  dashboard's sign-in throttle, Django's HTTPS check); the proxy reads neither. Its parse of the
  peer's address on every call was ~2% of a loaded worker's CPU.
"""

import os
import shutil
import tempfile
from pathlib import Path

_grace_s = float(os.environ.get("NEMO_DRAIN_GRACE_S", "30"))
graceful_timeout = int(_grace_s) + 5


# The metrics directory this master made (none given), removed when it exits.
_made: list[str] = []
# prometheus-client's multiprocess module, imported once the directory is known.
_multiprocess = []


def on_starting(server) -> None:
    directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if not directory:
        directory = tempfile.mkdtemp(prefix="nemo-metrics-")
        _made.append(directory)
    path = Path(directory)
    path.mkdir(parents=True, exist_ok=True)
    for stale in path.glob("*.db"):
        stale.unlink()
    # Set in the master before the workers are forked: prometheus-client reads it when imported.
    # So it is imported only now (the workers forked from this master inherit its mode), and
    # here rather than when a worker exits: the master reaps workers in a signal handler, a
    # second worker's signal can interrupt the first one's handler, and a nested import of a
    # half-imported module fails (the master then exited 1 after a clean drain).
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = directory
    from prometheus_client import multiprocess

    _multiprocess.append(multiprocess)


def post_worker_init(worker) -> None:
    """Before the worker's server loads the app (``uvicorn.Config.load``, which wraps it in the
    proxy-headers middleware when ``proxy_headers`` is set)."""
    config = getattr(worker, "config", None)
    if config is not None:
        config.proxy_headers = False


def child_exit(server, worker) -> None:
    """A worker gone: its live gauges leave the sums (its counters stay, as counters do)."""
    for multiprocess in _multiprocess:
        multiprocess.mark_process_dead(worker.pid)


def on_exit(server) -> None:
    for directory in _made:
        shutil.rmtree(directory, ignore_errors=True)
