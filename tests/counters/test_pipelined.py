"""The hot path's pipelined Redis client against a real Redis: ordering under concurrency,
error replies, scripts after a flush, a lost connection, and the database of the URL."""

import asyncio
import os
import time
import uuid

import pytest
import redis

from counters.pipelined import PipelinedRedis, RedisReplyError, Script

REDIS_URL = os.environ.get("REDIS_URL") or "redis://127.0.0.1:6379/15"
IN_CI = bool(os.environ.get("CI"))


def _sync_client() -> redis.Redis:
    return redis.Redis.from_url(REDIS_URL, socket_connect_timeout=0.5)


@pytest.fixture
def sync_redis():
    client = _sync_client()
    try:
        client.ping()
    except redis.ConnectionError:
        if IN_CI:
            raise
        pytest.skip(f"no Redis at {REDIS_URL}")
    yield client
    client.close()


@pytest.fixture
def prefix(sync_redis):
    prefix = f"nemo-test-{uuid.uuid4().hex}:"
    yield prefix
    keys = list(sync_redis.scan_iter(match=prefix + "*"))
    if keys:
        sync_redis.delete(*keys)


@pytest.fixture
async def client(prefix):
    client = PipelinedRedis(REDIS_URL)
    yield client
    await client.close()


async def test_many_concurrent_callers_each_get_their_own_reply(client, prefix):
    async def round_trip(i: int) -> tuple[int, bytes]:
        await client.execute("SET", f"{prefix}{i}", f"value-{i}")
        return i, await client.execute("GET", f"{prefix}{i}")

    results = await asyncio.gather(*(round_trip(i) for i in range(500)))

    assert all(value == f"value-{i}".encode() for i, value in results)


async def test_an_error_reply_is_raised_and_the_next_command_still_gets_its_own_reply(client, prefix):
    await client.execute("SET", prefix + "text", "not a number")

    failing = asyncio.ensure_future(client.execute("INCR", prefix + "text"))
    following = asyncio.ensure_future(client.execute("INCR", prefix + "counter"))

    with pytest.raises(RedisReplyError, match="not an integer"):
        await failing
    assert await following == 1


async def test_a_cancelled_caller_does_not_shift_the_replies_of_the_others(client, prefix):
    await client.execute("SET", prefix + "a", "A")
    await client.execute("SET", prefix + "b", "B")

    cancelled = asyncio.ensure_future(client.execute("GET", prefix + "a"))
    kept = asyncio.ensure_future(client.execute("GET", prefix + "b"))
    await asyncio.sleep(0)
    cancelled.cancel()

    assert await kept == b"B"
    assert await client.execute("GET", prefix + "a") == b"A"


async def test_a_script_runs_by_sha_and_is_sent_again_after_redis_forgets_it(client, prefix, sync_redis):
    script = Script(f"-- {prefix}\nreturn redis.call('INCRBY', KEYS[1], ARGV[1])")
    assert await client.evalsha(script, [prefix + "n"], [5]) == 5

    sync_redis.script_flush()

    assert await client.evalsha(script, [prefix + "n"], [2]) == 7
    assert sync_redis.script_exists(script.sha) == [True]


async def test_a_script_call_is_written_before_evalsha_returns(client, prefix, sync_redis):
    script = Script(f"-- {prefix}\nreturn redis.call('INCRBY', KEYS[1], ARGV[1])")
    assert await client.evalsha(script, [prefix + "n"], [1]) == 1  # connected, script loaded

    call = client.evalsha(script, [prefix + "n"], [10])
    # The event loop does not run meanwhile: only a write made inside evalsha reaches Redis.
    for _ in range(100):
        if sync_redis.get(prefix + "n") == b"11":
            break
        time.sleep(0.01)
    assert sync_redis.get(prefix + "n") == b"11"
    assert await call == 11


async def test_a_transaction_returns_the_replies_of_its_commands(client, prefix):
    replies = await client.transaction([("SET", prefix + "x", 1), ("INCRBY", prefix + "x", 41), ("GET", prefix + "x")])

    assert replies == [b"OK", 42, b"42"]


async def test_a_lost_connection_fails_the_calls_in_flight_and_the_next_call_reconnects(client, prefix, sync_redis):
    await client.execute("CLIENT", "SETNAME", prefix + "victim")
    blocked = asyncio.ensure_future(client.execute("BLPOP", prefix + "never", 10))
    await asyncio.sleep(0.1)

    victims = [info["id"] for info in sync_redis.client_list() if info.get("name") == prefix + "victim"]
    assert len(victims) == 1
    sync_redis.client_kill_filter(_id=victims[0])

    with pytest.raises(ConnectionError):
        await asyncio.wait_for(blocked, 5)
    assert await client.execute("PING") == b"PONG"


async def test_a_call_on_a_closing_connection_fails_at_once_and_the_next_one_reconnects(client, prefix):
    assert await client.execute("PING") == b"PONG"
    client._protocol.transport.close()  # lost; the loop has not yet said so

    # Refused at once (a closing transport would drop the write), not left waiting for the loss
    # to be reported.
    with pytest.raises(ConnectionError, match="closing"):
        await client.execute("PING")
    await asyncio.sleep(0.05)
    assert await client.execute("PING") == b"PONG"


async def test_the_database_of_the_url_is_selected(sync_redis, prefix):
    other_db = (sync_redis.connection_pool.connection_kwargs.get("db", 0) + 1) % 16
    base = REDIS_URL.rsplit("/", 1)[0]
    client = PipelinedRedis(f"{base}/{other_db}")
    try:
        await client.execute("SET", prefix + "where", "here")
    finally:
        await client.close()

    other = redis.Redis.from_url(f"{base}/{other_db}")
    try:
        assert other.get(prefix + "where") == b"here"
        other.delete(prefix + "where")
    finally:
        other.close()
    assert sync_redis.get(prefix + "where") is None


async def test_no_redis_is_a_connection_error(unused_tcp_port):
    client = PipelinedRedis(f"redis://127.0.0.1:{unused_tcp_port}/0")

    with pytest.raises(ConnectionError):
        await client.execute("PING")
