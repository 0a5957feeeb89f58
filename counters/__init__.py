"""Shared state of the hot path: budget counters, rate-limit windows, circuit breakers,
cooldowns, latency averages and the response cache.

One interface, ``CounterStore`` (``store.py``, with the values it takes and gives), and two
stores that pass the same contract tests (``tests/counters/test_store.py``): ``RedisCounterStore``
(``redis.py``), shared by every gateway worker on every machine, and ``MemoryCounterStore``
(``memory.py``), the same inside one process when there is no ``REDIS_URL``.

This package sits below billing and the gateway and imports nothing of ours.
"""

from counters.memory import MemoryCounterStore
from counters.redis import RedisCounterStore
from counters.store import (
    KEEPALIVE_S,
    NO_LIMIT,
    RECOVERY_HOLD_S,
    RUN_STATE_TTL_S,
    Admission,
    AdmitStatus,
    Bucket,
    BudgetParam,
    ChainCheck,
    CounterStore,
    OutputFit,
    RateCheck,
    RateLimited,
    RateWindow,
    RunCheck,
    Settle,
    seen,
)

__all__ = [
    "KEEPALIVE_S",
    "NO_LIMIT",
    "RECOVERY_HOLD_S",
    "RUN_STATE_TTL_S",
    "Admission",
    "AdmitStatus",
    "Bucket",
    "BudgetParam",
    "ChainCheck",
    "CounterStore",
    "MemoryCounterStore",
    "OutputFit",
    "RateCheck",
    "RateLimited",
    "RateWindow",
    "RedisCounterStore",
    "RunCheck",
    "Settle",
    "counter_store_from_url",
    "seen",
]


def counter_store_from_url(url: str | None, *, prefix: str = "nemo:",
                           recovery_hold_s: float = RECOVERY_HOLD_S) -> CounterStore:
    """Redis when a URL is configured, otherwise the in-process store (one worker only)."""
    if url:
        return RedisCounterStore(url, prefix=prefix, recovery_hold_s=recovery_hold_s)
    return MemoryCounterStore()
