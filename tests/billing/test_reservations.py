"""Reserving through an outage of the counter store: a call waits for it a little, then is refused
before anything is sent upstream."""

import time
from types import SimpleNamespace

import pytest

from billing import reservations
from billing.reservations import Admissions, CountersUnavailable
from counters import MemoryCounterStore

NOW = 1_900_000_000.0


def snapshot(**overrides) -> SimpleNamespace:
    return SimpleNamespace(**{"id": 7, "loaded_at": time.monotonic(), "budgets": (), "org_id": 3, "team_id": None,
                              "prefix": "abc", "credits_micros": 10_000_000, "rpm_limit": None, "tpm_limit": None,
                              "max_parallel": None, **overrides})


class AwayFor(MemoryCounterStore):
    """Refuses connections for its first ``failures`` steps, as a Redis restarting; ``steps``:
    which of its methods (the admission, a rebuild's seed)."""

    def __init__(self, failures: int, steps: tuple[str, ...] = ("admit", "seed")) -> None:
        super().__init__()
        self.failures = failures
        self.steps = steps

    def _away(self, step: str) -> None:
        if self.failures and step in self.steps:
            self.failures -= 1
            raise ConnectionRefusedError("Redis is restarting")

    async def admit(self, **kwargs):
        self._away("admit")
        return await super().admit(**kwargs)

    async def seed(self, name, value, **kwargs):
        self._away("seed")
        return await super().seed(name, value, **kwargs)


def from_an_empty_ledger(store):
    """Rebuilds the counters the store lacks as a ledger of no calls would."""
    async def rebuild(names, now):
        for name in names:
            await store.seed(name, 0, ttl_s=60, snapshot="1:1:")

    return rebuild


async def reserve_one(store):
    admissions = Admissions(store, rebuild=from_an_empty_ledger(store))
    return await admissions.reserve(reservation_id="r1", snapshot=snapshot(),
                                    prices=[SimpleNamespace(input=1, output=1)], prompt_bytes=10, output_tokens=10,
                                    now=NOW)


@pytest.mark.parametrize("steps", [("admit",), ("seed",), ("admit", "seed")])
async def test_a_call_waits_through_a_short_outage_of_the_counters_and_its_rebuilds(steps):
    store = AwayFor(3, steps)

    reservation = await reserve_one(store)

    assert (reservation.amount_micros, store.open_reservations()) == (20, ["r1"])


async def test_a_call_is_refused_with_a_503_when_the_counters_stay_away(monkeypatch):
    monkeypatch.setattr(reservations, "STORE_WAIT_S", 0.3)

    with pytest.raises(CountersUnavailable):
        await reserve_one(AwayFor(1_000))
