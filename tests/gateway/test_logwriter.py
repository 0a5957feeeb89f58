"""The group-committed request log: every row of a burst lands whole, whatever the batch size."""

import asyncio
import threading
import time
from decimal import Decimal

import pytest
from django.conf import settings
from django.db import connection
from django.utils import timezone

from analytics.models import RequestLog
from billing.counters import Bucket, MemoryCounterStore
from billing.reservations import Reservation, Settlement
from gateway.logwriter import LogWriter


def row(tenant, n: int) -> dict:
    return {
        "request_id": f"req_burst_{n}",
        "created": timezone.now(),
        "org_id": tenant.org.pk,
        "team_id": None,
        "key_id": tenant.key.pk,
        "key_prefix": tenant.key.prefix,
        "run_id": "burst",
        "model": "gpt-4o",
        "deployment": "primary",
        "provider": "first",
        "status": 200,
        "attempts": [{"deployment": "primary", "outcome": "ok", "latency_ms": n}],
        "prompt_tokens": n,
        "completion_tokens": 2 * n,
        "cost": Decimal("0.000123") * n,
        "tool_calls": [{"name": "search", "arguments": f'{{"page": {n}}}'}],
        "prompt_meta": {"messages": 1, "roles": ["user"], "sizes": [n]},
        "request_body": None,
    }


@pytest.mark.django_db(transaction=True)
def test_a_burst_of_rows_is_committed_whole(make_tenant):
    tenant = make_tenant()

    async def burst() -> None:
        writer = LogWriter()
        # One row alone, then a burst that lands in multi-row batches.
        await writer.write(row(tenant, 0))
        await asyncio.gather(*(writer.write(row(tenant, n)) for n in range(1, 40)))
        await writer.close()

    asyncio.run(burst())
    rows = {r.request_id: r for r in RequestLog.objects.filter(run_id="burst")}

    assert len(rows) == 40
    seventh = rows["req_burst_7"]
    assert seventh.cost == Decimal("0.000861")
    assert seventh.attempts == [{"deployment": "primary", "outcome": "ok", "latency_ms": 7}]
    assert seventh.tool_calls == [{"name": "search", "arguments": '{"page": 7}'}]
    assert (seventh.completion_tokens, seventh.request_body, seventh.cache) == (14, None, "skip")
    assert seventh.inserted is not None


def reservation(n: int) -> Reservation:
    return Reservation(id=f"res-{n}", amount_micros=1_000, tokens=0, bucket_names=(f"b:key:{n}:all",), rate_headers={})


async def reserve_all(store: MemoryCounterStore, count: int) -> None:
    for n in range(count):
        await store.seed(f"b:key:{n}:all", 0)
        bucket = Bucket(f"b:key:{n}:all", 10**9, 1_000, "key")
        admission = await store.admit(reservation_id=f"res-{n}", buckets=[bucket], rate=None, now=0.0, ttl_s=600)
        assert admission.ok


class SlowToSettle(MemoryCounterStore):
    """Settles after a pause, and tells which reservations it has settled so far."""

    def __init__(self) -> None:
        super().__init__()
        self.settled: set[str] = set()

    async def settle_many(self, settlements):
        await asyncio.sleep(0.2)
        done = await super().settle_many(settlements)
        self.settled.update(rid for rid, _, _ in settlements)
        return done


@pytest.mark.django_db(transaction=True)
def test_the_writer_commits_no_row_before_its_call_is_settled(make_tenant):
    tenant = make_tenant()
    store = SlowToSettle()
    early: list[str] = []
    writing = threading.Event()

    def watch() -> None:
        # From another connection, as a rebuild of a counter would read the ledger: a row seen
        # committed must belong to a call already settled (rows first, then the settled set).
        try:
            while writing.is_set():
                committed = list(RequestLog.objects.filter(run_id="burst").values_list("request_id", flat=True))
                settled = set(store.settled)
                early.extend(rid for rid in committed if rid.replace("req_burst_", "res-") not in settled)
                time.sleep(0.005)
        finally:
            connection.close()

    async def burst() -> None:
        await reserve_all(store, 20)
        writer = LogWriter(store)
        await asyncio.gather(*(writer.write(row(tenant, n), Settlement(reservation(n), 7 * n, 0)) for n in range(20)))
        await writer.close()

    writing.set()
    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        asyncio.run(burst())
    finally:
        writing.clear()
        watcher.join()

    assert RequestLog.objects.filter(run_id="burst").count() == 20
    assert early == []
    assert len(store.settled) == 20
    counters = asyncio.run(store.read([f"b:key:{n}:all" for n in range(20)]))
    assert counters == {f"b:key:{n}:all": 7 * n for n in range(20)}


@pytest.mark.django_db(transaction=True)
def test_rows_are_written_even_when_settling_fails(make_tenant):
    tenant = make_tenant()
    store = MemoryCounterStore()

    async def broken_settle_many(settlements):
        raise ConnectionError("Redis went away")

    store.settle_many = broken_settle_many

    async def one() -> None:
        writer = LogWriter(store)
        await writer.write(row(tenant, 3), Settlement(reservation(3), 21, 0))
        await writer.close()

    asyncio.run(one())

    assert RequestLog.objects.get(request_id="req_burst_3").cost == Decimal("0.000369")


@pytest.mark.django_db(transaction=True)
def test_closing_waits_for_the_batches_being_committed(make_tenant):
    tenant = make_tenant()

    async def close_mid_commit() -> None:
        writer = LogWriter()
        insert = writer._insert

        async def slow_insert(*args):
            await asyncio.sleep(0.3)
            await insert(*args)

        writer._insert = slow_insert
        writes = [asyncio.ensure_future(writer.write(row(tenant, n))) for n in range(5)]
        await asyncio.sleep(0.05)  # the batch is taken and committing
        await writer.close()
        await asyncio.wait_for(asyncio.gather(*writes), 10)

    asyncio.run(close_mid_commit())

    assert RequestLog.objects.filter(run_id="burst").count() == 5


@pytest.mark.redis
@pytest.mark.django_db(transaction=True)
def test_the_settle_is_on_its_way_to_redis_before_the_batch_is_committed(make_tenant, redis_prefix):
    """The settle is written as the batch is taken, not a turn of the event loop later, so its
    round trip overlaps the COPY's start instead of running behind it."""
    import redis

    from billing.counters import _SETTLE, RedisCounterStore

    tenant = make_tenant()
    seen_settled_before_commit: list[bool] = []
    counters: dict = {}
    sync_redis = redis.Redis.from_url(settings.REDIS_URL)

    # Redis knows the settle script (another test may have flushed its scripts): after a flush the
    # call is sent again as EVAL once the NOSCRIPT reply is read, which needs the loop to run.
    sync_redis.script_load(_SETTLE.source)

    async def one() -> None:
        store = RedisCounterStore(settings.REDIS_URL, prefix=redis_prefix)
        await reserve_all(store, 1)
        writer = LogWriter(store)
        insert = writer._insert

        async def insert_once_settled(*args):
            # The event loop is blocked here: the settle can only have left if it was written
            # before this commit began.
            deadline = time.monotonic() + 2
            while sync_redis.exists(f"{redis_prefix}res:res-0") and time.monotonic() < deadline:
                time.sleep(0.005)
            seen_settled_before_commit.append(not sync_redis.exists(f"{redis_prefix}res:res-0"))
            await insert(*args)

        writer._insert = insert_once_settled
        await writer.write(row(tenant, 0), Settlement(reservation(0), 7, 0))
        await writer.close()
        counters.update(await store.read(["b:key:0:all"]))
        await store.close()

    try:
        asyncio.run(one())
    finally:
        for key in sync_redis.scan_iter(match=redis_prefix + "*"):
            sync_redis.delete(key)
        sync_redis.close()

    assert seen_settled_before_commit == [True]
    assert counters == {"b:key:0:all": 7}
    assert RequestLog.objects.filter(request_id="req_burst_0").count() == 1
