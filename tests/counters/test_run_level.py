"""The run level of an admission (admit.lua's KEYS[8] / ARGV[17..19], run_tools.lua), against
Redis and the in-process store alike (the ``open_worker`` fixture of test_store.py)."""

import asyncio

from counters import NO_LIMIT, Admission, Bucket, CounterStore, OutputFit, RunCheck
from tests.counters import test_store
from tests.counters.test_store import FIT, KEY, NOW

# The same stores as the contract tests: Redis and the in-process store.
open_worker, store = test_store.open_worker, test_store.store

RUN = "b:run:42:agent-7"
OTHER_RUN = "b:run:42:agent-8"


async def admit_run(store: CounterStore, reservation_id: str, run: RunCheck, *, amount: int = 100, key_limit=10**9,
                    run_bucket: str = RUN, fit: OutputFit | None = None) -> Admission:
    limit = NO_LIMIT if run.envelope is None else run.envelope
    return await store.admit(reservation_id=reservation_id, now=NOW, ttl_s=300, rate=None, fit=fit, run=run,
                             buckets=[Bucket(KEY, key_limit, amount, "key"), Bucket(run_bucket, limit, amount, "run")])


async def seeded(store: CounterStore, *names: str) -> CounterStore:
    for name in (KEY, *names):
        await store.seed(name, 0)
    return store


async def test_a_run_is_refused_past_its_envelope_while_the_keys_other_runs_go_on(store: CounterStore) -> None:
    await seeded(store, RUN, OTHER_RUN)
    envelope = RunCheck(envelope=250, max_steps=None, loop_limit=0)

    first = await admit_run(store, "r1", envelope)
    second = await admit_run(store, "r2", envelope)
    third = await admit_run(store, "r3", envelope)
    other = await admit_run(store, "r4", envelope, run_bucket=OTHER_RUN)

    assert (first.status, second.status) == ("ok", "ok")
    assert (third.status, third.param, third.limit, third.remaining) == ("budget", "run", 250, 50)
    assert other.status == "ok"
    # A refusal changes nothing: the key holds the three calls admitted.
    assert (await store.read([KEY]))[KEY] == 300


async def test_the_runs_first_envelope_stands_and_a_later_call_cannot_raise_it(store: CounterStore) -> None:
    await seeded(store, RUN)

    await admit_run(store, "r1", RunCheck(envelope=150, max_steps=None, loop_limit=0))
    raised = await admit_run(store, "r2", RunCheck(envelope=10_000, max_steps=None, loop_limit=0))

    assert (raised.status, raised.param, raised.limit) == ("budget", "run", 150)


async def test_a_run_without_an_envelope_takes_the_first_one_proposed(store: CounterStore) -> None:
    await seeded(store, RUN)

    unlimited = await admit_run(store, "r1", RunCheck(envelope=None, max_steps=None, loop_limit=3))
    capped = await admit_run(store, "r2", RunCheck(envelope=250, max_steps=None, loop_limit=3))
    past = await admit_run(store, "r3", RunCheck(envelope=None, max_steps=None, loop_limit=3))

    assert (unlimited.status, capped.status) == ("ok", "ok")
    assert (past.status, past.limit, past.remaining) == ("budget", 250, 50)


async def test_the_settled_spend_of_a_run_counts_against_its_envelope(store: CounterStore) -> None:
    await seeded(store, RUN)
    envelope = RunCheck(envelope=250, max_steps=None, loop_limit=0)

    await admit_run(store, "r1", envelope)
    await store.settle_many([("r1", 200, 0, (KEY, RUN))], None)
    refused = await admit_run(store, "r2", envelope)

    assert (refused.status, refused.remaining) == ("budget", 50)
    assert (await store.read([RUN]))[RUN] == 200


async def test_the_budget_fitted_output_fits_the_run_envelope(store: CounterStore) -> None:
    await seeded(store, RUN)
    # 20,000 left after the prompt's 1,000 buys 8,000 tokens at 2.5 a token.
    envelope = RunCheck(envelope=21_000, max_steps=None, loop_limit=0)

    fitted = await admit_run(store, "r1", envelope, fit=FIT)
    refused = await admit_run(store, "r2", envelope, fit=FIT)

    assert (fitted.status, fitted.output_tokens, fitted.amount) == ("ok", 8_000, 21_000)
    assert (refused.status, refused.param) == ("budget", "run")


async def test_a_missing_run_counter_is_rebuilt_not_assumed_zero(store: CounterStore) -> None:
    await store.seed(KEY, 0)

    missing = await admit_run(store, "r1", RunCheck(envelope=250, max_steps=None, loop_limit=0))

    assert (missing.status, missing.missing) == ("missing", [RUN])


async def test_a_run_past_its_steps_is_refused(store: CounterStore) -> None:
    await seeded(store, RUN)
    steps = RunCheck(envelope=None, max_steps=2, loop_limit=0)

    admitted = [await admit_run(store, f"r{i}", steps) for i in range(2)]
    refused = await admit_run(store, "r3", steps)

    assert [a.status for a in admitted] == ["ok", "ok"]
    assert (refused.status, refused.param, refused.steps) == ("budget", "run", 2)
    assert (await store.read([KEY]))[KEY] == 200


async def test_the_loop_guard_stops_a_run_once_one_tool_call_was_asked_for_loop_limit_times(
        store: CounterStore) -> None:
    await seeded(store, RUN, OTHER_RUN)
    guarded = RunCheck(envelope=None, max_steps=None, loop_limit=3)

    await store.run_tool_calls(RUN, ["search:a", "search:b"])
    await store.run_tool_calls(RUN, ["search:a"])
    before = await admit_run(store, "r1", guarded)
    await store.run_tool_calls(RUN, ["search:a"])
    stopped = await admit_run(store, "r2", guarded)
    other = await admit_run(store, "r3", guarded, run_bucket=OTHER_RUN)

    assert before.status == "ok"
    assert (stopped.status, stopped.repeats) == ("loop", 3)
    assert other.status == "ok"
    assert (await store.read([KEY]))[KEY] == 200


async def test_concurrent_calls_of_a_run_never_reserve_past_its_envelope(open_worker) -> None:
    stores = [open_worker() for _ in range(4)]
    await seeded(stores[0], RUN)
    envelope = RunCheck(envelope=550, max_steps=None, loop_limit=0)

    admissions = await asyncio.gather(*(admit_run(stores[i % 4], f"r{i}", envelope) for i in range(40)))

    assert sum(a.status == "ok" for a in admissions) == 5
    assert (await stores[0].read([RUN]))[RUN] == 500
