"""The group-committed request log: every row of a burst lands whole, whatever the batch size."""

import asyncio
import math
import re
import threading
import time
from datetime import UTC, datetime
from decimal import Decimal

import psycopg
import pytest
from django.conf import settings
from django.db import connection
from django.utils import timezone

from analytics.models import RequestLog
from analytics.partitions import month_partition, month_partitions, month_start, partitions_ensure
from analytics.reaper import lost_calls_log
from billing.reservations import Reservation, Settlement
from counters import Bucket, MemoryCounterStore
from gateway import log_rows
from gateway.pgpipeline import PipelinedPostgres
from gateway.recorder import REFUSED, Recorder, _OwnConnection


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
        writer = Recorder()
        # One row alone, then a burst that lands in multi-row batches.
        await writer.record(row(tenant, 0))
        await asyncio.gather(*(writer.record(row(tenant, n)) for n in range(1, 40)))
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


class WatchedStore(MemoryCounterStore):
    """Notes, as each batch is settled, which of its calls' rows are committed, from another
    connection (as a rebuild of a counter would read the ledger), and the commit's position."""

    def __init__(self) -> None:
        super().__init__()
        self.events: list[str] = []
        self.committed_at_settle: dict[str, bool] = {}
        self.positions: list[int | None] = []
        self.position_of: dict[str, int | None] = {}

    def settle_many(self, settlements, position=None, **options):
        ids = [rid.replace("res-", "req_burst_") for rid, *_ in settlements]
        found: set[str] = set()

        def look() -> None:
            try:
                found.update(RequestLog.objects.filter(request_id__in=ids).values_list("request_id", flat=True))
            finally:
                connection.close()

        reader = threading.Thread(target=look)
        reader.start()
        reader.join()
        self.committed_at_settle.update({rid: rid in found for rid in ids})
        self.events += [f"settled {rid}" for rid in ids]
        self.positions.append(position)
        self.position_of.update(dict.fromkeys(ids, position))
        return super().settle_many(settlements, position, **options)


@pytest.mark.django_db(transaction=True)
def test_each_call_is_settled_once_its_row_is_committed_and_before_it_is_answered(make_tenant):
    tenant = make_tenant()
    store = WatchedStore()

    async def one(writer: Recorder, n: int) -> None:
        await writer.record(row(tenant, n), Settlement(reservation(n), 7 * n, 0))
        store.events.append(f"answered req_burst_{n}")

    async def burst() -> None:
        await reserve_all(store, 20)
        writer = Recorder(store)
        await one(writer, 0)
        await asyncio.gather(*(one(writer, n) for n in range(1, 20)))
        await writer.close()

    asyncio.run(burst())

    assert RequestLog.objects.filter(run_id="burst").count() == 20
    assert store.committed_at_settle == {f"req_burst_{n}": True for n in range(20)}
    for n in range(20):
        assert store.events.index(f"settled req_burst_{n}") < store.events.index(f"answered req_burst_{n}")
    # Every batch tells the store which commit wrote it; commits come in order.
    assert None not in store.positions and store.positions == sorted(store.positions)
    counters = asyncio.run(store.read([f"b:key:{n}:all" for n in range(20)]))
    assert counters == {f"b:key:{n}:all": 7 * n for n in range(20)}


@pytest.mark.django_db(transaction=True)
def test_a_call_is_answered_without_waiting_for_its_settles_reply(make_tenant):
    tenant = make_tenant()
    answered: list[bool] = []

    async def one() -> None:
        reply_held = asyncio.Event()

        class SlowToReply(MemoryCounterStore):
            def settle_many(self, settlements, position=None, **options):
                reply = super().settle_many(settlements, position, **options)

                async def later():
                    await reply_held.wait()
                    return await reply

                return asyncio.ensure_future(later())

        store = SlowToReply()
        await reserve_all(store, 1)
        writer = Recorder(store)
        try:
            await asyncio.wait_for(writer.record(row(tenant, 0), Settlement(reservation(0), 7, 0)), 5)
            answered.append(True)
        finally:
            reply_held.set()
            await writer.close()

    asyncio.run(one())

    assert answered == [True]
    assert RequestLog.objects.filter(request_id="req_burst_0").count() == 1


@pytest.mark.django_db(transaction=True)
def test_rows_are_written_even_when_settling_fails(make_tenant):
    tenant = make_tenant()
    store = MemoryCounterStore()

    async def broken_settle_many(settlements, position=None, **options):
        raise ConnectionError("Redis went away")

    store.settle_many = broken_settle_many

    async def one() -> None:
        writer = Recorder(store)
        await writer.record(row(tenant, 3), Settlement(reservation(3), 21, 0))
        await writer.close()

    asyncio.run(one())

    assert RequestLog.objects.get(request_id="req_burst_3").cost == Decimal("0.000369")


@pytest.mark.django_db(transaction=True)
def test_closing_waits_for_the_batches_being_committed(make_tenant):
    tenant = make_tenant()

    async def close_mid_commit() -> None:
        writer = Recorder()
        insert = writer._insert

        async def slow_insert(*args):
            await asyncio.sleep(0.3)
            await insert(*args)

        writer._insert = slow_insert
        writes = [asyncio.ensure_future(writer.record(row(tenant, n))) for n in range(5)]
        await asyncio.sleep(0.05)  # the batch is taken and committing
        await writer.close()
        await asyncio.wait_for(asyncio.gather(*writes), 10)

    asyncio.run(close_mid_commit())

    assert RequestLog.objects.filter(run_id="burst").count() == 5


@pytest.mark.redis
@pytest.mark.django_db(transaction=True)
def test_the_settle_reaches_redis_before_the_call_is_answered_and_the_call_does_not_wait_for_its_reply(
    make_tenant, redis_prefix
):
    """The settle is written to Redis as the batch's callers are answered: the call's next
    request finds its reservation gone (its parallel slot free), and the answer does not wait
    for the settle's reply."""
    import redis

    from counters import RedisCounterStore
    from counters.redis import _SETTLE

    tenant = make_tenant()
    settled_when_answered: list[bool] = []
    counters: dict = {}
    sync_redis = redis.Redis.from_url(settings.REDIS_URL)

    # Redis knows the settle script (another test may have flushed its scripts): after a flush the
    # call is sent again as EVAL once the NOSCRIPT reply is read, which needs the loop to run.
    sync_redis.script_load(_SETTLE.source)

    async def one() -> None:
        store = RedisCounterStore(settings.REDIS_URL, prefix=redis_prefix)
        await reserve_all(store, 1)
        writer = Recorder(store)
        await writer.record(row(tenant, 0), Settlement(reservation(0), 7, 0))
        # The event loop is blocked from here: the reservation can only go if the settle was
        # written before the call was answered.
        deadline = time.monotonic() + 2
        while sync_redis.exists(f"{redis_prefix}res:res-0") and time.monotonic() < deadline:
            time.sleep(0.005)
        settled_when_answered.append(not sync_redis.exists(f"{redis_prefix}res:res-0"))
        await writer.close()
        counters.update(await store.read(["b:key:0:all"]))
        await store.close()

    try:
        asyncio.run(one())
    finally:
        for key in sync_redis.scan_iter(match=redis_prefix + "*"):
            sync_redis.delete(key)
        sync_redis.close()

    assert settled_when_answered == [True]
    assert counters == {"b:key:0:all": 7}
    assert RequestLog.objects.filter(request_id="req_burst_0").count() == 1


@pytest.mark.parametrize("kind", ["memory", pytest.param("redis-server", marks=pytest.mark.redis)])
@pytest.mark.django_db(transaction=True)
def test_a_counter_rebuilt_between_a_commit_and_its_settle_counts_the_call_once(make_tenant, redis_prefix, kind):
    """The rows are committed before their settle. A counter that Redis lost meanwhile and that
    another call rebuilt from the ledger already holds the row: the settle must not add it again."""
    from billing.reservations import credits_bucket_name
    from counters import RedisCounterStore
    from gateway.rebuild import CounterRebuilds

    tenant = make_tenant()
    name = credits_bucket_name(tenant.org.pk)
    cost = 123 * 7  # the row's cost, Decimal("0.000123") * 7, in micro-dollars

    def rebuilt_before_settling(base: type):
        class Store(base):
            def settle_many(self, settlements, position=None, **options):
                async def rebuild_then_settle():
                    await CounterRebuilds(self)([name], timezone.now())
                    return await base.settle_many(self, settlements, position, **options)

                return asyncio.ensure_future(rebuild_then_settle())

        return Store

    async def one() -> tuple[dict, list[str]]:
        if kind == "memory":
            store = rebuilt_before_settling(MemoryCounterStore)()
        else:
            store = rebuilt_before_settling(RedisCounterStore)(settings.REDIS_URL, prefix=redis_prefix)
        try:
            # The counter expires while the call is in flight; its reservation stays.
            await store.seed(name, 0, ttl_s=0.05)
            admitted = await store.admit(reservation_id="res-7", buckets=[Bucket(name, 10**9, 5_000, "credits")],
                                         rate=None, now=time.time(), ttl_s=600)
            assert admitted.ok
            await asyncio.sleep(0.15)
            writer = Recorder(store)
            held = Reservation(id="res-7", amount_micros=5_000, tokens=0, bucket_names=(name,), rate_headers={})
            await writer.record(row(tenant, 7), Settlement(held, cost, 0))
            await writer.close()
            return await store.read([name]), await store.due(now=math.inf)
        finally:
            await store.clear()
            await store.close()

    counter, reservations_left = asyncio.run(one())

    assert RequestLog.objects.get(request_id="req_burst_7").cost == Decimal("0.000861")
    assert (counter, reservations_left) == ({name: cost}, [])


def burst_xmins() -> dict[str, str]:
    """The committed burst rows' ``xmin``: the id of the transaction that wrote each."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT request_id, xmin::text FROM analytics_requestlog WHERE run_id = 'burst'")
        return dict(cursor.fetchall())


@pytest.mark.postgres  # elsewhere a position is a count of this process's commits
@pytest.mark.django_db(transaction=True)
def test_a_batch_is_one_transaction_whose_position_comes_back(make_tenant):
    """A batch's rows commit together or not at all, and the position the committer reports is
    their transaction's (PostgreSQL: the id in each row's ``xmin``)."""
    tenant = make_tenant()
    positions: list[int] = []

    async def batches() -> list[BaseException | None]:
        writer = Recorder()
        database = _OwnConnection(writer._connections)
        loop = asyncio.get_running_loop()
        positions.append(await writer._insert([row(tenant, 0)], database, loop))
        positions.append(await writer._insert([row(tenant, n) for n in range(1, 6)], database, loop))
        # More dollars than the cost column holds: the database refuses the second statement.
        broken = [row(tenant, 6), {**row(tenant, 7), "cost": Decimal("1e15")}, row(tenant, 8)]
        outcome = await asyncio.gather(writer._insert(broken, database, loop), return_exceptions=True)
        # The connection is still good for the next batch.
        positions.append(await writer._insert([row(tenant, 9), row(tenant, 10)], database, loop))
        await writer.close()
        return outcome

    failed = asyncio.run(batches())
    xmin = burst_xmins()

    assert isinstance(failed[0], psycopg.errors.NumericValueOutOfRange)
    assert sorted(xmin) == sorted(f"req_burst_{n}" for n in (0, 1, 2, 3, 4, 5, 9, 10))
    # xmin is the transaction id without its epoch: the position's low 32 bits.
    assert int(xmin["req_burst_0"]) == positions[0] % 2**32
    assert {int(xmin[f"req_burst_{n}"]) for n in range(1, 6)} == {positions[1] % 2**32}
    assert {int(xmin["req_burst_9"]), int(xmin["req_burst_10"])} == {positions[2] % 2**32}
    assert positions[0] < positions[1] < positions[2]


@pytest.mark.postgres  # elsewhere a batch is one multi-row INSERT through Django's cursor
@pytest.mark.django_db(transaction=True)
def test_a_batch_is_written_in_a_few_multi_row_statements_each_prepared_once(make_tenant, monkeypatch):
    """PostgreSQL's cost of an INSERT is mostly per statement: a batch's rows go in chunks of
    powers of two (13 rows: 8, 4, 1), each size prepared once on the connection, and every row
    lands with its own values."""
    tenant = make_tenant()
    sent: list[list[bytes]] = []
    prepared: list[bytes] = []
    execute, prepare = PipelinedPostgres.execute, PipelinedPostgres.prepare

    async def watched_execute(self, statements):
        sent.append([name for name, _ in statements])
        return await execute(self, statements)

    async def watched_prepare(self, name, sql):
        prepared.append(name)
        await prepare(self, name, sql)

    monkeypatch.setattr(PipelinedPostgres, "execute", watched_execute)
    monkeypatch.setattr(PipelinedPostgres, "prepare", watched_prepare)

    async def batches() -> None:
        writer = Recorder()
        database = _OwnConnection(writer._connections)
        loop = asyncio.get_running_loop()
        await writer._insert([row(tenant, n) for n in range(13)], database, loop)
        await writer._insert([row(tenant, n) for n in range(13, 113)], database, loop)
        await writer.close()

    asyncio.run(batches())

    assert sent == [
        [b"nemo_log_insert_8", b"nemo_log_insert_4", log_rows.INSERT, log_rows.POSITION],
        [b"nemo_log_insert_64", b"nemo_log_insert_32", b"nemo_log_insert_4", log_rows.POSITION],
    ]
    assert prepared == [b"nemo_log_insert_8", b"nemo_log_insert_4", b"nemo_log_insert_64", b"nemo_log_insert_32"]
    rows = {r.request_id: r for r in RequestLog.objects.filter(run_id="burst")}
    assert len(rows) == 113
    for n in (0, 7, 8, 12, 13, 76, 77, 108, 112):
        assert (rows[f"req_burst_{n}"].prompt_tokens, rows[f"req_burst_{n}"].cost) == (n, Decimal("0.000123") * n)
        assert rows[f"req_burst_{n}"].attempts == [{"deployment": "primary", "outcome": "ok", "latency_ms": n}]


@pytest.mark.postgres  # the partitioned log is PostgreSQL's
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("lookup", [log_rows.LANDED, log_rows.REAPED])
def test_the_rows_a_lost_commit_may_have_written_are_looked_up_in_their_months_only(make_tenant, lookup):
    """After a lost commit reply (or a unique conflict with the reaper's row) the recorder looks its
    rows up by request id; bounded by the rows' ``created``, PostgreSQL reads only their month's
    partition, not every month's index."""
    tenant = make_tenant()
    partitions_ensure()  # this month and the next ones, so there are other months to leave out
    rows = [row(tenant, n) for n in range(3)]
    asyncio.run(_write(rows))
    sql = log_rows.statements()[lookup]
    with connection.cursor() as cursor:
        cursor.execute("SET plan_cache_mode = force_generic_plan")  # as the recorder's statement after its first runs
        cursor.execute(f"PREPARE looked_up(text[], timestamptz, timestamptz) AS {sql}")
        try:
            cursor.execute("EXPLAIN (ANALYZE, COSTS OFF) EXECUTE looked_up(%s, %s, %s)",
                           [log_rows.text_array([r["request_id"] for r in rows]).decode(),
                            *(bound.decode() for bound in log_rows.created_bounds(rows))])
            plan = "\n".join(line for (line,) in cursor.fetchall())
        finally:
            cursor.execute("DEALLOCATE looked_up")
            cursor.execute("RESET plan_cache_mode")

    this_month = month_partition(month_start(rows[0]["created"])).name
    assert set(re.findall(r"analytics_requestlog_(?:p\d{4}_\d{2}|default)\b", plan)) == {this_month}
    assert len(month_partitions()) > 1


async def _write(rows: list[dict]) -> None:
    writer = Recorder()
    for entry in rows:
        await writer.record(entry)
    await writer.close()


@pytest.mark.django_db(transaction=True)
def test_a_call_is_logged_whatever_its_client_or_upstream_sent(make_tenant):
    tenant = make_tenant()
    odd = {
        **row(tenant, 1),
        "model": "m" * 500,
        "run_id": "run\x00one",
        "finish_reason": 7,
        "prompt_tokens": -5,
        "completion_tokens": 2**40,
        "prompt_meta": {"roles\x00": ["user\x00"]},
        "request_body": {"messages": [{"role": "user", "content": "a\x00b"}]},
    }

    async def write() -> None:
        writer = Recorder()
        await writer.record(odd)
        await writer.close()

    asyncio.run(write())
    logged = RequestLog.objects.get(request_id="req_burst_1")

    assert (logged.model, logged.run_id, logged.finish_reason) == ("m" * 120, "run\ufffdone", "7")
    assert logged.prompt_tokens == 0
    assert logged.completion_tokens == min(2**40, connection.ops.integer_field_range("PositiveIntegerField")[1])
    assert logged.prompt_meta == {"roles\ufffd": ["user\ufffd"]}
    assert logged.request_body == {"messages": [{"role": "user", "content": "a\ufffdb"}]}


@pytest.mark.django_db(transaction=True)
def test_a_row_the_database_refuses_fails_its_own_call_only(make_tenant, caplog):
    tenant = make_tenant()
    store = WatchedStore()

    async def burst() -> list[BaseException | None]:
        await reserve_all(store, 8)
        writer = Recorder(store)
        first = row(tenant, 0)
        await writer.record(first)
        # req_burst_0 again: the unique request id (and time) refuses it, not the rows it is committed with.
        rows = [row(tenant, 1), row(tenant, 2), row(tenant, 3), first, row(tenant, 5), row(tenant, 6),
                row(tenant, 7)]
        writes = [writer.record(r, Settlement(reservation(n), 100, 1)) for n, r in enumerate(rows, start=1)]
        outcome = await asyncio.gather(*writes, return_exceptions=True)
        await writer.close()
        return outcome

    outcome = asyncio.run(burst())

    assert isinstance(outcome[3], REFUSED)
    assert outcome[:3] + outcome[4:] == [None] * 6
    assert "committing them one by one" in caplog.text
    assert sorted(RequestLog.objects.filter(run_id="burst").values_list("request_id", flat=True)) == [
        f"req_burst_{n}" for n in (0, 1, 2, 3, 5, 6, 7)]
    # Every call ran, so every call is settled, the refused one too.
    assert sorted(store.events) == sorted(f"settled req_burst_{n}" for n in range(1, 8))


def terminate(backend_pids: list[int]) -> None:
    try:
        with connection.cursor() as cursor:
            for pid in backend_pids:
                cursor.execute("SELECT pg_terminate_backend(%s)", [pid])
    finally:
        connection.close()


@pytest.mark.postgres  # SQLite has no connection to lose
@pytest.mark.django_db(transaction=True)
def test_a_committer_whose_connection_was_lost_opens_another(make_tenant):
    tenant = make_tenant()

    async def write() -> None:
        writer = Recorder()
        await writer.record(row(tenant, 1))
        await asyncio.to_thread(terminate, [opened._pgconn.backend_pid for opened in writer._connections])
        await asyncio.gather(*(writer.record(row(tenant, n)) for n in range(2, 6)))
        await writer.close()

    asyncio.run(write())

    assert RequestLog.objects.filter(run_id="burst").count() == 5


class ReplyDropper:
    """A TCP relay to PostgreSQL that, once armed, hangs up instead of passing on the server's
    next reply: what the server was sent happened (a commit), and the client never hears of it."""

    def __init__(self, host: str, port: int) -> None:
        self.target = (host, port)
        self.armed = False
        self.dropped = 0
        self.port = 0
        self._server: asyncio.Server | None = None
        self._relays: list[tuple[asyncio.Task, asyncio.StreamWriter]] = []

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._relay, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        self._server.close()
        for task, writer in self._relays:
            writer.close()
            await task

    async def _relay(self, client_reader, client_writer) -> None:
        self._relays.append((asyncio.current_task(), client_writer))
        server_reader, server_writer = await asyncio.open_connection(*self.target)

        async def pump(reader, writer, replies: bool) -> None:
            while data := await reader.read(65536):
                if replies and self.armed:
                    self.armed = False
                    self.dropped += 1
                    break
                writer.write(data)
            client_writer.close()
            server_writer.close()

        await asyncio.gather(pump(client_reader, server_writer, False), pump(server_reader, client_writer, True),
                             return_exceptions=True)


@pytest.mark.postgres  # SQLite commits in the process
@pytest.mark.django_db(transaction=True)
def test_a_commit_whose_reply_was_lost_is_not_written_twice_and_its_calls_succeed(make_tenant, monkeypatch):
    """The connection breaks after the server committed a batch and before its reply arrived:
    the committer finds the rows in the log, answers their calls with the position of the commit
    that wrote them, and writes nothing twice."""
    tenant = make_tenant()
    store = WatchedStore()
    params = log_rows.connection_params()
    relay = ReplyDropper(params.get("host", "127.0.0.1"), int(params.get("port", 5432)))
    monkeypatch.setattr(log_rows, "connection_params", lambda: {**params, "host": "127.0.0.1",
                                                                   "port": relay.port, "sslmode": "disable"})

    async def write() -> list:
        await relay.start()
        await reserve_all(store, 6)
        writer = Recorder(store)
        await writer.record(row(tenant, 0), Settlement(reservation(0), 1, 0))
        relay.armed = True
        # One lone row, then a batch of several whose reply is lost together.
        outcomes = await asyncio.gather(writer.record(row(tenant, 1), Settlement(reservation(1), 1, 0)),
                                        return_exceptions=True)
        relay.armed = True
        outcomes += await asyncio.gather(
            *(writer.record(row(tenant, n), Settlement(reservation(n), 1, 0)) for n in range(2, 6)),
            return_exceptions=True)
        await writer.close()
        await relay.close()
        return outcomes

    outcomes = asyncio.run(write())
    xmin = burst_xmins()

    assert relay.dropped == 2
    assert outcomes == [None] * 5
    assert sorted(xmin) == [f"req_burst_{n}" for n in range(6)]  # each once: request ids are unique
    # Every call was settled once, with the position of the commit that wrote its row.
    assert sorted(store.events) == [f"settled req_burst_{n}" for n in range(6)]
    assert {rid: position % 2**32 for rid, position in store.position_of.items()} == {
        rid: int(x) for rid, x in xmin.items()}
    assert store.committed_at_settle == {f"req_burst_{n}": True for n in range(6)}


@pytest.mark.django_db(transaction=True)
@pytest.mark.postgres
def test_the_row_of_a_call_the_reaper_logged_meanwhile_is_not_written_twice(make_tenant):
    """The request id is unique with the row's time (the log is partitioned by it): the reaper's
    row is made from the call's trail, whose time is the call's own, so it still refuses the
    call's late row."""
    tenant = make_tenant()
    arrived = time.time()
    late = {**row(tenant, 0), "created": datetime.fromtimestamp(arrived, UTC)}
    lost_calls_log({late["request_id"]: {"created": arrived, "org_id": tenant.org.pk, "key_id": tenant.key.pk,
                                         "model": "gpt-4o", "amount": 900}}, arrived + 60)

    async def write() -> None:
        writer = Recorder()
        await writer.record(late)
        await writer.close()

    asyncio.run(write())

    logged = RequestLog.objects.get(request_id=late["request_id"])
    assert (logged.status, logged.attempts[0]["outcome"]) == (500, "worker_lost")
