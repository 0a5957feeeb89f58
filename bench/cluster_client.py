"""Micro-benchmark: one script call per admission against a Redis Cluster, through the gateway's
pipelined cluster client (counters/cluster.py) and through redis-py's asyncio ``RedisCluster``.

Starts a six-node cluster of its own on spare ports (tests/promises/faults/servers.py), runs
``CALLS`` calls from ``CONCURRENCY`` tasks with each client, and prints calls a second and the
worker CPU per call. ``python -m bench.cluster_client``
"""

from __future__ import annotations

import asyncio
import time

from redis.asyncio.cluster import RedisCluster

from counters.cluster import ClusterPipelinedRedis
from counters.pipelined import Script
from tests.promises.faults.servers import RedisClusterServers

CALLS = 10_000
CONCURRENCY = 200
# As small as an admission's bookkeeping: a few keys of one org's slot.
SCRIPT = Script("redis.call('INCR', KEYS[1]); redis.call('HINCRBY', KEYS[2], 'total', 1); return 1")


def keys_of(i: int) -> list[str]:
    org = i % 50
    return [f"bench:s:{{o{org}}}b", f"bench:r:{{o{org}}}b"]


async def ours(url: str) -> None:
    client = ClusterPipelinedRedis(url)
    await client.evalsha(SCRIPT, keys_of(0), [])

    async def worker(start: int) -> None:
        for i in range(start, CALLS, CONCURRENCY):
            await client.evalsha(SCRIPT, keys_of(i), [])

    await asyncio.gather(*(worker(n) for n in range(CONCURRENCY)))
    await client.close()


async def redis_py(url: str) -> None:
    host, port = url.split("://", 1)[1].split(",")[0].split(":")
    client = RedisCluster(host=host, port=int(port))
    script = client.register_script(SCRIPT.source)
    await script(keys=keys_of(0))

    async def worker(start: int) -> None:
        for i in range(start, CALLS, CONCURRENCY):
            await script(keys=keys_of(i))

    await asyncio.gather(*(worker(n) for n in range(CONCURRENCY)))
    await client.aclose()


def measure(name: str, run, url: str) -> None:
    wall, cpu = time.perf_counter(), time.process_time()
    asyncio.run(run(url))
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    print(f"{name:>28}: {CALLS / wall:8.0f} calls/s, {cpu / CALLS * 1e6:6.0f} µs worker CPU per call")


def main() -> None:
    cluster = RedisClusterServers().start()
    try:
        for _ in range(2):
            measure("counters.cluster (ours)", ours, cluster.url)
            measure("redis.asyncio.RedisCluster", redis_py, cluster.url)
    finally:
        cluster.destroy()


if __name__ == "__main__":
    main()
