"""The counter store on the test session's own Redis Cluster (tests/conftest.py): the client
follows the cluster's redirections, and the orgs' counters, each under its hash tag, live on
different nodes and recover from a lost node on their own."""

import asyncio
import math
import uuid

import pytest
import redis

from counters import Bucket, RedisCounterStore
from counters.cluster import ClusterPipelinedRedis, is_cluster_url, pubsub_url
from counters.pipelined import Script
from tests.counters.test_store import HOLD_S, NOW, SNAPSHOT, admit

ECHO = Script("return redis.call('GET', KEYS[1])")


@pytest.fixture
async def client(redis_cluster):
    opened = ClusterPipelinedRedis(redis_cluster.url)
    yield opened
    await opened.close()


def key_on(redis_cluster, port: int, stem: str) -> str:
    """A key of ``stem`` that the primary on ``port`` serves."""
    for n in range(10_000):
        key = f"{stem}-{n}"
        if redis_cluster.port_of(key) == port:
            return key
    raise AssertionError(f"no key on {port}")


async def test_a_stale_slot_map_is_corrected_by_the_moved_replies(client, redis_cluster) -> None:
    ports = sorted(redis_cluster.primaries())
    keys = [key_on(redis_cluster, port, f"moved-{uuid.uuid4().hex}") for port in ports]
    for key in keys:
        await client.execute("SET", key, key)
    # Every slot said to be on the first primary: two of the three keys answer MOVED.
    client._slots = [("127.0.0.1", ports[0])] * len(client._slots)

    values = [await client.execute("GET", key) for key in keys]
    scripted = [await client.evalsha(ECHO, [key], []) for key in keys]

    assert values == scripted == [key.encode() for key in keys]
    assert {address[1] for address in client._slots} == set(ports)


async def test_a_slot_being_migrated_is_followed_with_asking(client, redis_cluster) -> None:
    source, target = sorted(redis_cluster.primaries())[:2]
    key = key_on(redis_cluster, source, f"ask-{uuid.uuid4().hex}")
    admin = {port: redis.Redis(port=port, decode_responses=True) for port in (source, target)}
    slot = admin[source].cluster("KEYSLOT", key)
    ids = {port: admin[port].cluster("MYID") for port in (source, target)}
    await client.execute("GET", key)  # the slot map read before the migration starts
    admin[target].cluster("SETSLOT", slot, "IMPORTING", ids[source])
    admin[source].cluster("SETSLOT", slot, "MIGRATING", ids[target])
    try:
        # Not on the source: it answers ASK, and the key is written on the target.
        assert await client.execute("SET", key, "moved-in") == b"OK"
        assert await client.evalsha(ECHO, [key], []) == b"moved-in"
        assert asking(target, "EXISTS", key) == 1
    finally:
        # The key written on the target goes before its slot is given back to the source.
        asking(target, "DEL", key)
        for port in (source, target):
            admin[port].cluster("SETSLOT", slot, "NODE", ids[source])
        for connection in admin.values():
            connection.close()


def asking(port: int, *command):
    """A command to a node importing the slot of its key."""
    connection = redis.Redis(port=port, single_connection_client=True)
    try:
        connection.execute_command("ASKING")
        return connection.execute_command(*command)
    finally:
        connection.close()


def org_on(redis_cluster, port: int, prefix: str, skip: set[int]) -> int:
    for org in range(1, 10_000):
        if org not in skip and redis_cluster.port_of(f"{prefix}s:{{o{org}}}b") == port:
            return org
    raise AssertionError(f"no org on {port}")


async def test_a_flushed_node_holds_only_its_orgs_while_their_calls_in_flight_are_put_back(redis_cluster) -> None:
    prefix = f"nemo-test-{uuid.uuid4().hex}:"
    first, second = (RedisCounterStore(redis_cluster.url, prefix=prefix, recovery_hold_s=HOLD_S) for _ in range(2))
    lost_port, kept_port = sorted(redis_cluster.primaries())[:2]
    lost_org = org_on(redis_cluster, lost_port, prefix, set())
    kept_org = org_on(redis_cluster, kept_port, prefix, {lost_org})
    lost, kept = f"{{o{lost_org}}}b:key:1:none:all", f"{{o{kept_org}}}b:key:2:none:all"
    try:
        for name in (lost, kept):
            await first.seed(name, 0)
            assert (await admit(first, f"in-flight-{name}", Bucket(name, 1_000, 600, "key"))).ok
            assert (await admit(second, f"earlier-{name}", Bucket(name, 1_000, 100, "key"))).ok
            await second.settle_many([(f"earlier-{name}", 100, 0, [name])], 105)

        redis.Redis(port=lost_port).flushall()
        held = await admit(second, "after", Bucket(lost, 1_000, 600, "key"))
        other = await admit(second, "other", Bucket(kept, 1_000, 200, "key"))
        await first.keepalive(now=NOW)
        await asyncio.sleep(HOLD_S + 0.05)
        missing = await admit(second, "after", Bucket(lost, 1_000, 600, "key"))
        await second.seed(lost, 100, snapshot=SNAPSHOT)
        refused = await admit(second, "after", Bucket(lost, 1_000, 600, "key"))

        assert (held.status, other.status, missing.status, refused.status) == ("hold", "ok", "missing", "budget")
        # The call in flight of the lost org came back: 100 settled + 600 in flight of 1000.
        assert (refused.limit, refused.remaining) == (1_000, 300)
        assert await first.read([lost, kept]) == {lost: 700, kept: 900}
        assert sorted(await first.due(now=math.inf)) == sorted(
            [f"in-flight-{lost}", f"in-flight-{kept}", "other"])
    finally:
        await first.clear()
        await first.close()
        await second.close()


def test_a_cluster_url_names_its_seeds_and_credentials_and_pub_sub_uses_the_first() -> None:
    client = ClusterPipelinedRedis("rediss+cluster://nemo:s3cret@10.0.0.1:7000,10.0.0.2:7001")

    assert client._seeds == [("10.0.0.1", 7000), ("10.0.0.2", 7001)]
    assert (client._scheme, client._auth) == ("rediss", "nemo:s3cret@")
    assert pubsub_url("redis+cluster://nemo:s3cret@10.0.0.1:7000,10.0.0.2:7001") == "redis://nemo:s3cret@10.0.0.1:7000"
    assert pubsub_url("redis://cache:6379/2") == "redis://cache:6379/2"
    assert not is_cluster_url("redis://cache:6379/2") and is_cluster_url("redis+cluster://cache:6379")
