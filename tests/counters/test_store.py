"""The contract of the shared hot-path state, run against Redis and against the in-process store.

Time is passed in, so most tests run on a fixed clock; only TTLs that Redis enforces itself
(seeded counters, the response cache) take a short real sleep.
"""

import asyncio
import math
import os
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
import redis

from counters import (
    Admission,
    Bucket,
    ChainCheck,
    CounterStore,
    MemoryCounterStore,
    OutputFit,
    RateCheck,
    RateWindow,
    RedisCounterStore,
    RunCheck,
    seen,
)

# Outside CI a developer's REDIS_URL may point at real data: every test writes under its own
# prefix and removes exactly those keys afterwards.
REDIS_URL = os.environ.get("REDIS_URL") or "redis://127.0.0.1:6379/15"
IN_CI = bool(os.environ.get("CI"))

NOW = 1_900_000_000.0
KEY = "b:key:42:2026-11"
TEAM = "b:team:7:2026-11"
ORG = "b:org:3:2026-11"
CREDITS = "b:credits:3"

OpenWorker = Callable[[], CounterStore]
# The recovery hold after a lost store (counters/lua/epoch.lua), short for the tests.
HOLD_S = 0.2


def _redis_reachable() -> bool:
    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=0.5)
    try:
        return bool(client.ping())
    except redis.ConnectionError:
        return False
    finally:
        client.close()


# The id is not "redis": tests/conftest.py skips anything with that keyword unless REDIS_URL is
# set, and these run whenever a Redis answers (and must in CI).
@pytest.fixture(params=["memory", "redis-server", "redis-cluster"])
async def open_worker(request: pytest.FixtureRequest) -> AsyncIterator[OpenWorker]:
    """Opens the store as one more gateway worker sees it: in Redis a separate client and
    connection pool on the same keys; in-process the one store every worker of the process uses.
    ``redis-cluster``: the test session's own Redis Cluster (tests/conftest.py)."""
    if request.param == "memory":
        shared = MemoryCounterStore(recovery_hold_s=HOLD_S)
        yield lambda: shared
        return
    url = REDIS_URL
    if request.param == "redis-cluster":
        url = request.getfixturevalue("redis_cluster").url
    elif not IN_CI and not _redis_reachable():
        pytest.skip(f"no Redis at {REDIS_URL}")
    prefix = f"nemo-test-{uuid.uuid4().hex}:"
    opened: list[RedisCounterStore] = []

    def open_redis_worker() -> CounterStore:
        opened.append(RedisCounterStore(url, prefix=prefix, recovery_hold_s=HOLD_S))
        return opened[-1]

    yield open_redis_worker
    if opened:
        await opened[0].clear()
    for store in opened:
        await store.close()


@pytest.fixture
def store(open_worker: OpenWorker) -> CounterStore:
    return open_worker()


async def admit(
    store: CounterStore,
    reservation_id: str,
    *buckets: Bucket,
    rate: RateCheck | None = None,
    now: float = NOW,
    ttl_s: float = 300,
) -> Admission:
    return await store.admit(reservation_id=reservation_id, buckets=list(buckets), rate=rate, now=now, ttl_s=ttl_s)


async def expire(store: CounterStore, name: str) -> None:
    """The seeded counter's time to live runs out now, as Redis expires (or evicts) it. Not a short
    TTL and a sleep: a loaded machine took longer than the TTL between the seed and the admission
    that had to come before the expiry, and the test failed."""
    if isinstance(store, MemoryCounterStore):
        store._settled_expires[name] = 0.0
        return
    placed = store._names.placed(name)
    await store._redis.execute("DEL", store._key("s", placed), store._key("sx", placed))


async def chain_check(store: CounterStore, chain: list[str], now: float, *, probe_lease_s: float = 30.0) -> ChainCheck:
    """The check of ``chain`` that a call admitted at ``now`` gets with its admission."""
    admission = await store.admit(reservation_id=uuid.uuid4().hex, buckets=[], rate=None, now=now, ttl_s=300,
                                  chain=chain, probe_lease_s=probe_lease_s)
    return admission.chain


async def may_try(store: CounterStore, deployment: str, now: float, *, probe_lease_s: float = 30.0) -> bool:
    """Whether a call admitted at ``now`` may try ``deployment``: its circuit is closed, or the
    call is its one probe."""
    return deployment not in (await chain_check(store, [deployment], now, probe_lease_s=probe_lease_s)).skip


# ---- budgets ---------------------------------------------------------------------------------


# A call whose prompt may cost 1,000 micro-dollars and whose output costs 2.5 a token.
FIT = OutputFit(base=1_000, price_pico=2_500_000, fewest=256, most=16_384)


async def admit_fitted(store: CounterStore, reservation_id: str, *buckets: Bucket) -> Admission:
    return await store.admit(reservation_id=reservation_id, buckets=list(buckets), rate=None, now=NOW, ttl_s=300,
                             fit=FIT, trail={"model": "m", "created": NOW, "amount": 0})


async def test_a_fitted_call_buys_the_output_its_tightest_budget_can_pay_for(store: CounterStore) -> None:
    await store.seed(KEY, 0)
    await store.seed("b:credits:1", 0)
    tight, roomy = Bucket(KEY, 21_000, 0, "key"), Bucket("b:credits:1", 10_000_000, 0, "credits")

    first = await admit_fitted(store, "r1", tight, roomy)
    second = await admit_fitted(store, "r2", tight, roomy)
    third = await admit_fitted(store, "r3", tight, roomy)

    # 20,000 left after the prompt's 1,000 buys 8,000 tokens at 2.5; then 0 are left.
    assert (first.status, first.output_tokens, first.amount) == ("ok", 8_000, 21_000)
    assert (second.status, second.param) == ("budget", "key")
    assert third.status == "budget"
    assert (await store.trails(["r1"]))["r1"]["amount"] == 21_000
    await store.settle_many([("r1", 3_000, 0, (KEY, "b:credits:1"))], None)
    after = await admit_fitted(store, "r4", tight, roomy)
    # 18,000 left: the fewest (256 tokens, 1,640) fit, and 6,800 tokens are bought.
    assert (after.status, after.output_tokens, after.amount) == ("ok", 6_800, 18_000)


async def test_a_fitted_call_is_capped_at_the_most_it_asked_for(store: CounterStore) -> None:
    await store.seed(KEY, 0)

    admission = await admit_fitted(store, "r1", Bucket(KEY, 10_000_000, 0, "key"))
    again = await admit_fitted(store, "r1", Bucket(KEY, 10_000_000, 0, "key"))

    assert (admission.output_tokens, admission.amount) == (16_384, 1_000 + 40_960)
    # The same admission tried again (its reply lost) says the same.
    assert (again.status, again.output_tokens, again.amount) == ("ok", 16_384, 41_960)


async def test_a_fitted_call_is_refused_when_not_even_its_fewest_tokens_fit(store: CounterStore) -> None:
    await store.seed(KEY, 0)

    refused = await admit_fitted(store, "r1", Bucket(KEY, 1_000 + 639, 0, "key"))
    admitted = await admit_fitted(store, "r2", Bucket(KEY, 1_000 + 640, 0, "key"))

    assert (refused.status, refused.param, refused.remaining) == ("budget", "key", 1_639)
    assert (admitted.status, admitted.output_tokens) == ("ok", 256)



async def test_it_reserves_at_every_level(store: CounterStore) -> None:
    for name, settled in {KEY: 0, TEAM: 100, ORG: 200, CREDITS: 300}.items():
        await store.seed(name, settled)

    admission = await admit(
        store,
        "r1",
        Bucket(KEY, 1_000, 40, "key"),
        Bucket(TEAM, 1_000, 40, "team"),
        Bucket(ORG, 1_000, 40, "org"),
        Bucket(CREDITS, 1_000, 40, "credits"),
    )

    assert admission.status == "ok"
    assert await store.read([KEY, TEAM, ORG, CREDITS]) == {KEY: 40, TEAM: 140, ORG: 240, CREDITS: 340}
    assert await store.due(now=math.inf) == ["r1"]


async def test_it_refuses_with_the_first_level_that_does_not_fit_and_changes_nothing(store: CounterStore) -> None:
    for name, settled in {KEY: 0, TEAM: 950, ORG: 990}.items():
        await store.seed(name, settled)
    rate = RateCheck("k1", rpm=10, tpm=None, max_parallel=1, tokens=100)

    refused = await admit(
        store,
        "r1",
        Bucket(KEY, 1_000, 60, "key"),
        Bucket(TEAM, 1_000, 60, "team"),
        Bucket(ORG, 1_000, 60, "org"),
        rate=rate,
    )

    assert (refused.status, refused.param, refused.limit, refused.remaining) == ("budget", "team", 1_000, 50)
    assert await store.read([KEY, TEAM, ORG]) == {KEY: 0, TEAM: 950, ORG: 990}
    assert await store.due(now=math.inf) == []
    # Neither a request, nor a parallel slot was used up by the refused call.
    next_call = await admit(store, "r2", Bucket(KEY, 1_000, 60, "key"), rate=rate)
    assert next_call.status == "ok"
    assert next_call.requests == RateWindow(limit=10, remaining=9, reset=pytest.approx(6.0))


async def test_concurrent_admissions_never_reserve_past_the_limit(open_worker: OpenWorker) -> None:
    workers = [open_worker() for _ in range(4)]
    await workers[0].seed(ORG, 0)

    admissions = await asyncio.gather(
        *(admit(workers[i % 4], f"r{i}", Bucket(ORG, 20 * 50_000, 50_000, "org")) for i in range(200))
    )

    assert Counter(a.status for a in admissions) == {"ok": 20, "budget": 180}
    assert await workers[0].read([ORG]) == {ORG: 1_000_000}


async def test_concurrent_calls_never_spend_past_the_budget(open_worker: OpenWorker) -> None:
    workers = [open_worker() for _ in range(4)]
    await workers[0].seed(ORG, 0)
    budget = Bucket(ORG, 1_000_000, 120_000, "org")

    first = await asyncio.gather(*(admit(workers[i % 4], f"a{i}", budget) for i in range(200)))
    # Settling every id, admitted or not: a refused call has no reservation to settle.
    settled = await asyncio.gather(*(workers[i % 4].settle_many([(f"a{i}", 100_000, 0, [])]) for i in range(200)))
    second = await asyncio.gather(*(admit(workers[i % 4], f"b{i}", budget) for i in range(200)))

    assert sum(a.ok for a in first) == settled.count([True]) == 8
    assert sum(a.ok for a in second) == 1
    assert await workers[0].read([ORG]) == {ORG: 920_000}


async def test_settle_replaces_the_reservation_by_the_real_cost_once(store: CounterStore) -> None:
    await store.seed(KEY, 100)
    await admit(store, "r1", Bucket(KEY, 1_000, 400, "key"))

    assert await store.settle_many([("r1", 250, 0, [])]) == [True]
    assert await store.settle_many([("r1", 250, 0, [])]) == [False]
    assert await store.read([KEY]) == {KEY: 350}
    assert await store.due(now=math.inf) == []


async def test_settle_many_settles_each_call_of_a_batch_on_its_own(store: CounterStore) -> None:
    await store.seed(KEY, 100)
    await admit(store, "r1", Bucket(KEY, 1_000, 400, "key"))
    await admit(store, "r2", Bucket(KEY, 1_000, 300, "key"))

    settled = await store.settle_many([("r1", 250, 0, [KEY]), ("unknown", 70, 0, []), ("r2", 5, 0, [KEY])])

    assert settled == [True, False, True]
    assert await store.read([KEY]) == {KEY: 355}
    assert await store.due(now=math.inf) == []


async def test_two_reapers_release_each_stale_reservation_once(open_worker: OpenWorker) -> None:
    first, second = open_worker(), open_worker()
    await first.seed(KEY, 0)
    await admit(first, "stale-1", Bucket(KEY, 1_000, 100, "key"), ttl_s=10)
    await admit(first, "stale-2", Bucket(KEY, 1_000, 100, "key"), ttl_s=10)
    await admit(first, "live", Bucket(KEY, 1_000, 100, "key"), ttl_s=600)

    reaped = await asyncio.gather(first.reap(now=NOW + 30), second.reap(now=NOW + 30))

    assert sorted(reaped[0] + reaped[1]) == ["stale-1", "stale-2"]
    assert await first.read([KEY]) == {KEY: 100}
    assert await first.settle_many([("stale-1", 80, 0, [])]) == [False]
    assert await first.reap(now=NOW + 30) == []


async def test_a_worker_that_dies_right_after_an_admission_leaves_its_reservation_to_the_reaper(
        open_worker: OpenWorker) -> None:
    """A gateway worker may be killed at any moment after its admission ran in Redis: whatever it
    had yet to send, its reservation is one a reaper finds (the org's tag is in the registry the
    reaper walks), so the budget is not held for good."""
    dying, reaper = open_worker(), open_worker()
    if not isinstance(dying, RedisCounterStore):
        pytest.skip("in-process, a worker's death takes the store with it")
    bucket_key = "{o9}b:key:42:2026-11"
    await dying.seed(bucket_key, 0)
    admitted = False
    client_evalsha, client_execute = dying._redis.evalsha, dying._redis.execute

    def evalsha(script, keys, args, **options):
        nonlocal admitted
        reply = client_evalsha(script, keys, args, **options)
        admitted = True
        return reply

    async def execute(*command):
        if admitted:
            raise ConnectionError("the worker was killed")
        return await client_execute(*command)

    dying._redis.evalsha, dying._redis.execute = evalsha, execute
    try:
        await admit(dying, "orphan", Bucket(bucket_key, 1_000, 100, "key"), ttl_s=10)
    except ConnectionError:
        pass
    finally:
        del dying._redis.evalsha, dying._redis.execute  # the fixture clears the keys through it
    assert admitted

    assert await reaper.reap(now=NOW + 30) == ["orphan"]
    assert await reaper.read([bucket_key]) == {bucket_key: 0}


async def test_the_reaper_settles_a_logged_call_with_its_cost_and_its_late_settle_charges_nothing(
    store: CounterStore,
) -> None:
    await store.seed(KEY, 0)
    await admit(store, "logged", Bucket(KEY, 1_000, 100, "key"), ttl_s=10)
    await admit(store, "unlogged", Bucket(KEY, 1_000, 100, "key"), ttl_s=10)
    await admit(store, "live", Bucket(KEY, 1_000, 100, "key"), ttl_s=600)

    assert sorted(await store.due(now=NOW + 30)) == ["logged", "unlogged"]
    assert await store.reap_settled([("logged", 80, 5), ("never-reserved", 9, 1)], None) == [True, False]
    # The call's own settle comes after all: told it is settled, so nothing is charged twice.
    late = await store.settle_many([("logged", 80, 5, [KEY])])

    assert late == [True]
    assert await store.reap_settled([("logged", 80, 5)], None) == [False]
    assert await store.read([KEY]) == {KEY: 80 + 2 * 100}
    assert await store.due(now=NOW + 30) == ["unlogged"]
    assert await store.reap(now=NOW + 30) == ["unlogged"]
    assert await store.read([KEY]) == {KEY: 80 + 100}
    # A call reaped at cost 0 is still reported unknown, so its late settle charges its cost.
    assert await store.settle_many([("unlogged", 30, 5, [])]) == [False]


async def test_the_reapers_settle_adds_nothing_to_a_counter_rebuilt_after_the_rows_commit(store: CounterStore) -> None:
    await store.seed(KEY, 0, ttl_s=60)
    await admit(store, "logged", Bucket(KEY, 1_000, 100, "key"), ttl_s=10)
    await expire(store, KEY)
    # Rebuilt from a ledger that held the row (committed at position 7): the row's cost is in.
    assert await store.seed(KEY, 80, snapshot="8:8:")

    assert await store.reap_settled([("logged", 80, 5)], 7) == [True]
    assert await store.read([KEY]) == {KEY: 80}


async def test_a_reaped_call_frees_its_parallel_slot(store: CounterStore) -> None:
    rate = RateCheck("k1", rpm=None, tpm=None, max_parallel=1, tokens=0)
    await admit(store, "stuck", rate=rate, ttl_s=10)

    await store.reap(now=NOW + 30)

    assert (await admit(store, "next", rate=rate, now=NOW + 30)).status == "ok"


async def test_a_missing_counter_is_reported_not_assumed_zero(store: CounterStore) -> None:
    await store.seed(KEY, 0)
    buckets = [Bucket(KEY, 1_000, 100, "key"), Bucket(TEAM, 1_000, 100, "team")]

    missing = await admit(store, "r1", *buckets)
    await store.seed(TEAM, 850)
    admitted = await admit(store, "r1", *buckets)

    assert (missing.status, missing.missing) == ("missing", [TEAM])
    assert admitted.status == "ok"
    assert await store.read([KEY, TEAM]) == {KEY: 100, TEAM: 950}


async def test_seed_keeps_the_counter_someone_else_seeded_first(open_worker: OpenWorker) -> None:
    first, second = open_worker(), open_worker()

    assert await first.seed(KEY, 500) is True
    assert await second.seed(KEY, 0) is False
    assert await second.read([KEY, TEAM]) == {KEY: 500, TEAM: None}


async def test_after_a_flush_every_workers_calls_in_flight_are_put_back_before_more_are_admitted(
    open_worker: OpenWorker,
) -> None:
    first, second = open_worker(), open_worker()
    await first.seed(KEY, 0)
    await admit(first, "in-flight", Bucket(KEY, 1_000, 600, "key"))
    await admit(second, "earlier", Bucket(KEY, 1_000, 100, "key"))
    await second.settle_many([("earlier", 100, 0, [KEY])], 105)

    await first.clear()
    held = await admit(second, "after", Bucket(KEY, 1_000, 600, "key"))
    # The first worker's heartbeat notices the loss and puts its call in flight back.
    await first.keepalive(now=NOW)
    await asyncio.sleep(HOLD_S + 0.05)
    missing = await admit(second, "after", Bucket(KEY, 1_000, 600, "key"))
    await second.seed(KEY, 100, snapshot=SNAPSHOT)  # the ledger holds the settled call only
    refused = await admit(second, "after", Bucket(KEY, 1_000, 600, "key"))
    await first.settle_many([("in-flight", 500, 0, [KEY])], 110)

    assert (held.status, missing.status, refused.status) == ("hold", "missing", "budget")
    assert (refused.limit, refused.remaining) == (1_000, 300)
    assert await first.read([KEY]) == {KEY: 600}
    assert await first.due(now=math.inf) == []
    assert first.open_reservations() == second.open_reservations() == []


async def test_a_worker_that_just_started_admits_at_once_on_a_new_store(open_worker: OpenWorker) -> None:
    store = open_worker()
    await store.seed(KEY, 0)

    assert (await admit(store, "first", Bucket(KEY, 1_000, 100, "key"))).status == "ok"
    assert store.open_reservations() == ["first"]


async def test_a_heartbeat_pushes_back_the_deadlines_of_the_calls_in_flight(store: CounterStore) -> None:
    await store.seed(KEY, 0)
    await admit(store, "running", Bucket(KEY, 1_000, 100, "key"), ttl_s=30)
    await admit(store, "settled", Bucket(KEY, 1_000, 100, "key"), ttl_s=30)
    await store.settle_many([("settled", 50, 0, [KEY])])

    await store.keepalive(now=NOW + 20)

    assert await store.due(now=NOW + 45) == []
    assert await store.due(now=NOW + 50) == ["running"]
    assert store.open_reservations() == ["running"]


async def test_an_admission_tried_again_after_its_reply_was_lost_reserves_once(store: CounterStore) -> None:
    await store.seed(KEY, 0)

    first = await admit(store, "r1", Bucket(KEY, 1_000, 400, "key"))
    again = await admit(store, "r1", Bucket(KEY, 1_000, 400, "key"))

    assert (first.status, again.status) == ("ok", "ok")
    assert await store.read([KEY]) == {KEY: 400}


async def test_a_reservation_keeps_the_trail_its_call_was_admitted_with(store: CounterStore) -> None:
    await store.seed(KEY, 0)
    trail = {"model": "gpt-4o", "org_id": 3, "amount": 100}
    await store.admit(reservation_id="r1", buckets=[Bucket(KEY, 1_000, 100, "key")], rate=None, now=NOW, ttl_s=30,
                      trail=trail)
    await admit(store, "bare", Bucket(KEY, 1_000, 100, "key"))

    assert await store.trails(["r1", "bare", "unknown"]) == {"r1": trail}



async def test_a_settle_is_not_misled_by_a_trail_that_quotes_the_records_own_fields(store: CounterStore) -> None:
    # The settle reads the record's buckets and rate key and skips its trail (release.lua).
    await store.seed(KEY, 0)
    await store.seed(TEAM, 0)
    rate = RateCheck("k1", rpm=None, tpm=1_000, max_parallel=1, tokens=600)
    quoting = '","c":{"b":["' + TEAM + '"],"rk":"k2","tk":0,"ti":1},"b":["' + TEAM + '"],"x":"'
    trail = {"model": quoting, ',"c":': quoting, "amount": 100}
    await store.admit(reservation_id="r1", buckets=[Bucket(KEY, 1_000, 100, "key")], rate=rate, now=NOW, ttl_s=30,
                      trail=trail)

    assert await store.settle_many([("r1", 40, 100, [KEY])]) == [True]
    assert await store.read([KEY, TEAM]) == {KEY: 40, TEAM: 0}
    after = await admit(store, "r2", rate=rate)
    assert after.status == "ok"
    assert after.tokens == RateWindow(1_000, 300, pytest.approx(42.0))

@pytest.mark.parametrize(("snapshot", "position", "expected"), [
    ("100:105:102,103", 99, True),
    ("100:105:102,103", 100, True),
    ("100:105:102,103", 102, False),
    ("100:105:102,103", 103, False),
    ("100:105:102,103", 104, True),
    ("100:105:102,103", 105, False),
    ("7:7:", 6, True),
    ("7:7:", 7, False),
    ("100:105:102", None, False),
    (None, 57, False),
    ("", 57, False),
])
def test_seen_tells_whether_a_read_at_a_snapshot_saw_a_commit(snapshot, position, expected):
    assert seen(snapshot, position) is expected


# A rebuild that read the ledger at this snapshot saw every commit before 100, and those of
# 100 - 104 but for 102, still running then.
SNAPSHOT = "100:105:102"


@pytest.mark.parametrize(("position", "counted_by_the_rebuild"), [
    (57, True), (100, True), (104, True), (102, False), (105, False), (300, False), (None, False),
])
async def test_a_settle_adds_its_cost_only_if_the_rebuild_did_not_count_its_row(
    store: CounterStore, position: int | None, counted_by_the_rebuild: bool
) -> None:
    await store.seed(KEY, 0, ttl_s=60)
    await store.seed(TEAM, 0)
    await admit(store, "committed", Bucket(KEY, 10_000, 400, "key"), Bucket(TEAM, 10_000, 400, "team"))
    await expire(store, KEY)
    # The key's counter expired and was rebuilt from the ledger, holding whatever it saw; the
    # team's counter was never rebuilt and has no snapshot.
    await store.seed(KEY, 1_000 if counted_by_the_rebuild else 700, snapshot=SNAPSHOT)

    assert await store.settle_many([("committed", 300, 0, [])], position) == [True]
    assert await store.read([KEY, TEAM]) == {KEY: 1_000, TEAM: 300}


@pytest.mark.parametrize(("position", "counted_by_the_rebuild"), [(99, True), (102, False), (None, False)])
async def test_a_lost_reservations_settle_skips_the_counters_whose_rebuild_counted_its_row(
    store: CounterStore, position: int | None, counted_by_the_rebuild: bool
) -> None:
    await store.seed(KEY, 1_000 if counted_by_the_rebuild else 700, snapshot=SNAPSHOT)
    await store.seed(TEAM, 700)

    charged = await store.settle_many([("lost", 300, 0, [KEY, TEAM, ORG])], position)

    assert charged == [True]
    assert await store.read([KEY, TEAM, ORG]) == {KEY: 1_000, TEAM: 1_000, ORG: None}


async def test_a_counter_rebuilt_again_forgets_its_old_snapshot(store: CounterStore) -> None:
    await store.seed(KEY, 0, ttl_s=0.05, snapshot=SNAPSHOT)
    await asyncio.sleep(0.15)
    await store.seed(KEY, 0)  # read where commits have no positions
    await store.settle_many([("lost", 300, 0, [KEY])], 57)

    assert await store.read([KEY]) == {KEY: 300}


async def test_settle_many_settles_a_batch_committed_at_one_position(store: CounterStore) -> None:
    await store.seed(KEY, 0, ttl_s=60)
    await admit(store, "a", Bucket(KEY, 10_000, 400, "key"))
    await admit(store, "b", Bucket(KEY, 10_000, 400, "key"))
    await expire(store, KEY)
    await store.seed(KEY, 500, snapshot=SNAPSHOT)  # the rebuild saw the batch's commit (103)

    assert await store.settle_many([("a", 200, 0, [KEY]), ("b", 300, 0, [KEY])], 103) == [True, True]
    assert await store.read([KEY]) == {KEY: 500}
    assert await store.due(now=math.inf) == []


async def test_a_lost_reservations_settle_leaves_a_missing_counter_to_its_rebuild(store: CounterStore) -> None:
    await store.settle_many([("lost", 300, 0, [KEY])])

    assert await store.read([KEY]) == {KEY: None}
    assert await store.seed(KEY, 0) is True
    # Its commit's position unknown (it was never committed), nothing waited for the rebuild.
    assert await store.read([KEY]) == {KEY: 0}


@pytest.mark.parametrize(("position", "seen_by_the_rebuild", "counter"), [(57, True, 700), (120, False, 1_000)])
async def test_a_cost_settled_while_its_counter_was_missing_waits_for_the_rebuild(
    store: CounterStore, position: int, seen_by_the_rebuild: bool, counter: int
) -> None:
    """The rebuild read the ledger (at SNAPSHOT) before or after the call's commit, and set the
    counter after the call's settle found it missing: the call counts once either way."""
    await store.settle_many([("lost", 300, 0, [KEY])], position)
    await store.seed(KEY, 700, snapshot=SNAPSHOT)

    assert await store.read([KEY]) == {KEY: counter}


async def test_a_settle_tried_again_charges_nothing_for_a_reservation_gone(store: CounterStore) -> None:
    await store.seed(KEY, 100)
    await admit(store, "r1", Bucket(KEY, 1_000, 400, "key"))
    await store.settle_many([("r1", 250, 0, [KEY])])

    again = await store.settle_many([("r1", 250, 0, [KEY])], charge_missing=False)

    assert again == [False]
    assert await store.read([KEY]) == {KEY: 350}


async def test_a_rebuilt_counter_still_counts_the_reservations_in_flight(store: CounterStore) -> None:
    await store.seed(KEY, 0, ttl_s=60)
    await admit(store, "in-flight", Bucket(KEY, 1_000, 400, "key"))
    await expire(store, KEY)

    assert await store.read([KEY]) == {KEY: None}
    await store.seed(KEY, 0)
    assert (await admit(store, "second", Bucket(KEY, 1_000, 400, "key"))).status == "ok"
    assert (await admit(store, "third", Bucket(KEY, 1_000, 400, "key"))).status == "budget"
    assert await store.settle_many([("in-flight", 300, 0, [])]) == [True]
    assert await store.read([KEY]) == {KEY: 700}


async def test_a_new_period_is_a_new_counter(store: CounterStore) -> None:
    november, december = "b:key:42:2026-11", "b:key:42:2026-12"
    await store.seed(november, 0)
    await admit(store, "late-november", Bucket(november, 1_000, 600, "key"))

    full = await admit(store, "r2", Bucket(november, 1_000, 600, "key"))
    new_period = await admit(store, "r2", Bucket(december, 1_000, 600, "key"))
    await store.seed(december, 0)
    admitted = await admit(store, "r2", Bucket(december, 1_000, 600, "key"))
    await store.settle_many([("late-november", 500, 0, [])])

    assert (full.status, new_period.status, admitted.status) == ("budget", "missing", "ok")
    assert await store.read([november, december]) == {november: 500, december: 600}


async def test_money_must_be_whole_micro_dollars(store: CounterStore) -> None:
    await store.seed(KEY, 0)

    with pytest.raises(TypeError):
        await admit(store, "r1", Bucket(KEY, 1_000, 0.5, "key"))  # type: ignore[arg-type]


# ---- rate limits -----------------------------------------------------------------------------


async def test_requests_per_minute(store: CounterStore) -> None:
    rate = RateCheck("k1", rpm=3, tpm=None, max_parallel=None, tokens=100)

    admitted = [await admit(store, f"r{i}", rate=rate) for i in range(3)]
    limited = await admit(store, "r3", rate=rate)
    later = await admit(store, "r3", rate=rate, now=NOW + 20)

    assert [a.requests for a in admitted] == [
        RateWindow(3, 2, pytest.approx(20.0)),
        RateWindow(3, 1, pytest.approx(40.0)),
        RateWindow(3, 0, pytest.approx(60.0)),
    ]
    assert (limited.status, limited.which, limited.retry_after) == ("rate_limited", "requests", pytest.approx(20.0))
    assert limited.requests == RateWindow(3, 0, pytest.approx(60.0))
    assert limited.tokens is None
    assert later.status == "ok"


async def test_tokens_per_minute_are_reserved_then_corrected(store: CounterStore) -> None:
    rate = RateCheck("k1", rpm=10, tpm=1_000, max_parallel=None, tokens=600)

    first = await admit(store, "r1", rate=rate)
    limited = await admit(store, "r2", rate=rate)
    await store.settle_many([("r1", 0, 100, [])])
    after_settle = await admit(store, "r2", rate=rate)

    assert first.tokens == RateWindow(1_000, 400, pytest.approx(36.0))
    assert (limited.status, limited.which, limited.retry_after) == ("rate_limited", "tokens", pytest.approx(12.0))
    assert limited.requests == RateWindow(10, 9, pytest.approx(6.0))
    assert after_settle.status == "ok"
    assert after_settle.tokens == RateWindow(1_000, 300, pytest.approx(42.0))
    assert after_settle.requests == RateWindow(10, 8, pytest.approx(12.0))


async def test_parallel_calls(store: CounterStore) -> None:
    rate = RateCheck("k1", rpm=None, tpm=None, max_parallel=2, tokens=0)
    await admit(store, "r1", rate=rate)
    await admit(store, "r2", rate=rate)

    limited = await admit(store, "r3", rate=rate)
    await store.settle_many([("r1", 0, 0, [])])
    after_settle = await admit(store, "r3", rate=rate)

    assert (limited.status, limited.which, limited.retry_after) == ("rate_limited", "parallel", 1.0)
    assert after_settle.status == "ok"


async def test_a_rate_limited_call_reserves_no_money(store: CounterStore) -> None:
    await store.seed(KEY, 0)
    rate = RateCheck("k1", rpm=1, tpm=None, max_parallel=None, tokens=0)
    await admit(store, "r1", Bucket(KEY, 1_000, 100, "key"), rate=rate)

    limited = await admit(store, "r2", Bucket(KEY, 1_000, 100, "key"), rate=rate)

    assert limited.status == "rate_limited"
    assert await store.read([KEY]) == {KEY: 100}


# ---- circuit breaker, cooldowns, latency ------------------------------------------------------


async def test_the_circuit_opens_after_enough_failures_within_the_window(store: CounterStore) -> None:
    for second in (0, 1):
        await store.breaker_record("flash-vertex", False, NOW + second, failure_threshold=3, window_s=30, open_s=30)
    still_closed = await may_try(store, "flash-vertex", NOW + 2)
    await store.breaker_record("flash-vertex", False, NOW + 2, failure_threshold=3, window_s=30, open_s=30)

    assert still_closed is True
    assert await may_try(store, "flash-vertex", NOW + 3) is False


async def test_failures_spread_wider_than_the_window_keep_it_closed(store: CounterStore) -> None:
    for second in (0, 20, 40):
        await store.breaker_record("flash-vertex", False, NOW + second, failure_threshold=3, window_s=30, open_s=30)

    assert await may_try(store, "flash-vertex", NOW + 41) is True


async def test_one_worker_probes_an_open_circuit_and_its_success_closes_it(open_worker: OpenWorker) -> None:
    first, second = open_worker(), open_worker()
    for _ in range(3):
        await first.breaker_record("flash-vertex", False, NOW, failure_threshold=3, open_s=30)

    during = await may_try(second, "flash-vertex", NOW + 29)
    probes = await asyncio.gather(*(may_try(w, "flash-vertex", NOW + 31) for w in (first, second) * 4))
    await first.breaker_record("flash-vertex", True, NOW + 32)

    assert during is False
    assert sorted(probes) == [False] * 7 + [True]
    assert await may_try(second, "flash-vertex", NOW + 33) is True
    assert await may_try(first, "flash-vertex", NOW + 33) is True


async def test_a_failed_probe_opens_the_circuit_again(store: CounterStore) -> None:
    for _ in range(3):
        await store.breaker_record("flash-vertex", False, NOW, failure_threshold=3, open_s=30)
    await may_try(store, "flash-vertex", NOW + 31)

    await store.breaker_record("flash-vertex", False, NOW + 32, failure_threshold=3, open_s=30)

    assert await may_try(store, "flash-vertex", NOW + 61) is False
    assert await may_try(store, "flash-vertex", NOW + 62) is True


async def test_a_probe_that_never_reports_back_is_replaced_after_its_lease(store: CounterStore) -> None:
    for _ in range(3):
        await store.breaker_record("flash-vertex", False, NOW, failure_threshold=3, open_s=30)
    await may_try(store, "flash-vertex", NOW + 31, probe_lease_s=10)

    assert await may_try(store, "flash-vertex", NOW + 40, probe_lease_s=10) is False
    assert await may_try(store, "flash-vertex", NOW + 41, probe_lease_s=10) is True


async def test_the_chain_check_filters_a_chain_in_one_step(store: CounterStore) -> None:
    await store.cooldown_set("cooling", NOW + 10)
    for _ in range(3):
        await store.breaker_record("open", False, NOW, failure_threshold=3, open_s=30)
        await store.breaker_record("probe-due", False, NOW - 60, failure_threshold=3, open_s=30)

    # "probe-due" sits behind a usable link, so its one probe is not spent on this call...
    behind = await chain_check(store, ["cooling", "open", "healthy", "probe-due"], NOW + 1)
    # ...but it is when it leads the chain, and then only once.
    leading = await chain_check(store, ["probe-due", "healthy"], NOW + 1)
    taken = await chain_check(store, ["probe-due", "healthy"], NOW + 1)

    assert behind.skip == {"cooling", "open", "probe-due"}
    assert leading.skip == set()
    assert taken.skip == {"probe-due"}


async def test_the_chain_check_names_the_probe_it_grants(store: CounterStore) -> None:
    for _ in range(3):
        await store.breaker_record("probe-due", False, NOW - 60, failure_threshold=3, open_s=30)

    first = await chain_check(store, ["probe-due", "healthy"], NOW + 1)
    second = await chain_check(store, ["probe-due", "healthy"], NOW + 1)

    assert (first.skip, first.probes) == (set(), {"probe-due"})
    assert (second.skip, second.probes) == ({"probe-due"}, set())


async def test_an_admitted_call_gets_its_chain_check_with_its_admission(store: CounterStore) -> None:
    await store.seed(KEY, 0)
    await store.cooldown_set("cooling", NOW + 10)
    for _ in range(3):
        await store.breaker_record("probe-due", False, NOW - 60, failure_threshold=3, open_s=30)

    admission = await store.admit(reservation_id="r1", buckets=[Bucket(KEY, 1_000, 10, "key")], rate=None,
                                  now=NOW + 1, ttl_s=300, chain=["cooling", "probe-due", "healthy"])
    plain = await admit(store, "r2", Bucket(KEY, 1_000, 10, "key"), now=NOW + 1)

    assert admission.ok and admission.chain is not None
    assert (admission.chain.skip, admission.chain.probes) == ({"cooling"}, {"probe-due"})
    assert plain.ok and plain.chain is None


async def test_each_admission_checks_its_own_chain_and_run_whatever_came_before_with_the_same_buckets(
        store: CounterStore) -> None:
    """The Redis store works an admission's key names out once per shape (its buckets, rate key,
    chain and run): calls of the same key with other chains, or a run, must not get another's."""
    await store.seed(KEY, 0)
    await store.cooldown_set("cooling", NOW + 10)
    bucket = Bucket(KEY, 1_000, 10, "key")

    def admitted(reservation_id: str, chain: list[str]) -> Awaitable[Admission]:
        return store.admit(reservation_id=reservation_id, buckets=[bucket], rate=None, now=NOW + 1, ttl_s=300,
                           chain=chain)

    first, second, again = await admitted("r1", ["healthy"]), await admitted("r2", ["cooling"]), \
        await admitted("r3", ["healthy"])
    run_bucket = Bucket("b:run:42:one", 15, 10, "run")
    await store.seed(run_bucket.name, 0)
    in_run = await store.admit(reservation_id="r4", buckets=[bucket, run_bucket], rate=None, now=NOW + 1, ttl_s=300,
                               run=RunCheck(envelope=15, max_steps=None, loop_limit=0))
    past_envelope = await store.admit(reservation_id="r5", buckets=[bucket, run_bucket], rate=None, now=NOW + 1,
                                      ttl_s=300, run=RunCheck(envelope=15, max_steps=None, loop_limit=0))

    assert first.chain.skip == set() and second.chain.skip == {"cooling"} and again.chain.skip == set()
    assert in_run.ok and past_envelope.status == "budget" and past_envelope.param == "run"


async def test_the_chain_check_is_right_after_redis_forgot_its_scripts(open_worker: OpenWorker) -> None:
    store = open_worker()
    if not isinstance(store, RedisCounterStore):
        pytest.skip("Redis only: the in-process store has no script cache")
    await store.seed(KEY, 0)
    for _ in range(3):
        await store.breaker_record("probe-due", False, NOW - 60, failure_threshold=3, open_s=30)
    for node in await store._redis.nodes():
        await node.execute("SCRIPT", "FLUSH")

    admission = await store.admit(reservation_id="r1", buckets=[Bucket(KEY, 1_000, 10, "key")], rate=None,
                                  now=NOW + 1, ttl_s=300, chain=["probe-due", "healthy"])

    assert admission.ok and admission.chain.probes == {"probe-due"}


async def test_a_refused_call_takes_no_probe(store: CounterStore) -> None:
    await store.seed(KEY, 990)
    for _ in range(3):
        await store.breaker_record("probe-due", False, NOW - 60, failure_threshold=3, open_s=30)

    refused = await store.admit(reservation_id="r1", buckets=[Bucket(KEY, 1_000, 50, "key")], rate=None,
                                now=NOW + 1, ttl_s=300, chain=["probe-due", "healthy"])
    later = await chain_check(store, ["probe-due", "healthy"], NOW + 2)

    assert refused.status == "budget" and refused.chain is None
    assert later.probes == {"probe-due"}


async def test_cooldowns(store: CounterStore) -> None:
    await store.cooldown_set("flash-vertex", NOW + 10)

    assert await store.cooldowns_until(["flash-vertex", "flash-backup"], NOW + 9) == {"flash-vertex": NOW + 10}
    assert await store.cooldowns_until(["flash-vertex", "flash-backup"], NOW + 10) == {}


async def test_latency_is_a_moving_average(store: CounterStore) -> None:
    await store.latency_record("flash-vertex", 100.0)
    await store.latency_record("flash-vertex", 200.0)

    assert await store.latency_get(["flash-vertex", "flash-backup"]) == {
        "flash-vertex": pytest.approx(120.0),
        "flash-backup": None,
    }


# ---- response cache --------------------------------------------------------------------------


async def test_the_cache_keeps_a_response_for_its_ttl(store: CounterStore) -> None:
    # A TTL long enough for the reads before the sleep, however slow the machine, and one that
    # has surely run out after it.
    await store.cache_set("chat:abc", b'{"id": "chatcmpl-1"}', ttl_s=60)
    await store.cache_set("chat:brief", b'{"id": "chatcmpl-2"}', ttl_s=0.01)

    assert await store.cache_get("chat:abc") == b'{"id": "chatcmpl-1"}'
    assert await store.cache_get("chat:other") is None
    await asyncio.sleep(0.05)
    assert await store.cache_get("chat:brief") is None
    assert await store.cache_get("chat:abc") == b'{"id": "chatcmpl-1"}'
