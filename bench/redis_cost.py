"""``python -m bench.redis_cost``: the instructions Redis spends on each gateway call, load-immune.

Starts a Redis of its own under callgrind (valgrind) on a spare port, replays the bench
gateway's calls through the counter store — each an admission as the bench's chat call makes it
(two budget levels, the key's RPM and TPM, a chain of one deployment, a trail) and its settle in
the log writer's batches — with ``--in-flight`` calls outstanding, and prints what Redis spent per
admission and per settled call (callgrind's totals over the replay, divided by its calls); then
stops that Redis. Instruction counts do not depend on what else the machine runs, so two versions
of the scripts compare on a busy host. Not a test: nothing here asserts a figure. See
bench/RESULTS.md, session 14.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from counters.pipelined import PipelinedRedis
from counters.redis import RedisCounterStore
from counters.store import Bucket, RateCheck

# The bench's key and org (bench/gateway_setup.py): limits far above the load.
_BUCKETS = [Bucket("{o1}b:key:1:none:all", 100_000_000_000, 65, "key"),
            Bucket("{o1}b:credits:1", 1_000_000_000_000, 65, "credits")]
_RATE = RateCheck(key="{o1}k:1", rpm=100_000_000, tpm=1_000_000_000, max_parallel=None, tokens=107)
_TRAIL = {"endpoint": "chat.completions", "model": "gpt-4o-mini", "run_id": "", "stream": False,
          "deployments": ["bench-fast"], "amount": 65, "org_id": 1, "team_id": None, "key_id": 1,
          "key_prefix": "p-ZRv0hlY9V5", "created": 1_796_348_607.0090878}
# The position of the commit that wrote the calls' log rows.
_POSITION = 312_636


def _options() -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.redis_cost", description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, default=6393, help="the port of the Redis it starts (6393)")
    parser.add_argument("--in-flight", type=int, default=16, help="calls outstanding, as wrk -c (16)")
    parser.add_argument("--batch", type=int, default=4, help="calls a settle carries (4)")
    parser.add_argument("--rounds", type=int, default=12, help="rounds of --in-flight admissions and their settles")
    parser.add_argument("--redis-option", action="append", default=[], metavar="NAME=VALUE",
                        help="a redis-server option, e.g. zset-max-listpack-entries=0 (repeatable)")
    return parser.parse_args()


class _Profiled:
    """A redis-server under callgrind: ``take()`` is what it spent since the last take."""

    def __init__(self, port: int, options: list[str]) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="redis_cost."))
        extra = [part for option in options for part in ("--" + option.split("=", 1)[0], option.split("=", 1)[1])]
        self.process = subprocess.Popen(
            ["valgrind", "--tool=callgrind", f"--callgrind-out-file={self.dir}/cg.%p", "redis-server",
             "--port", str(port), "--save", "", "--appendonly", "no", *extra],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)

    def take(self) -> int:
        for dump in self.dir.glob("cg.*"):
            dump.unlink()
        subprocess.run(["callgrind_control", "-d", str(self.process.pid)], capture_output=True, check=True)
        for line in next(self.dir.glob("cg.*.*")).read_text().splitlines():
            if line.startswith(("summary:", "totals:")):
                return int(line.split()[1])
        raise RuntimeError("callgrind's dump has no totals")

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=60)
        shutil.rmtree(self.dir, ignore_errors=True)


async def _ready(url: str) -> None:
    deadline = time.monotonic() + 60
    while True:
        client = PipelinedRedis(url)
        try:
            await client.execute("PING")
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.5)
        finally:
            await client.close()


async def _replay(store: RedisCounterStore, redis: _Profiled, args: argparse.Namespace) -> tuple[int, int]:
    """Admits ``--in-flight`` calls, then settles the oldest as many, ``--rounds`` times: the
    instructions spent admitting and settling."""
    names = [bucket.name for bucket in _BUCKETS]

    async def admit(i: int) -> None:
        admission = await store.admit(reservation_id=f"req_{i:032x}", buckets=_BUCKETS, rate=_RATE, now=time.time(),
                                      ttl_s=120.0, chain=["bench-fast"], probe_lease_s=30.0, trail=_TRAIL)
        if admission.status != "ok":
            raise RuntimeError(f"admission refused: {admission}")

    for name in names:
        await store.seed(name, 0)
    # Redis compiles each script on its first call: one call admitted and settled before counting.
    await admit(-1)
    await store.settle_many([(f"req_{-1:032x}", 5, 16, names)], _POSITION)
    for i in range(args.in_flight):
        await admit(i)
    admitting = settling = 0
    redis.take()
    for turn in range(args.rounds):
        first_new, first_old = (turn + 1) * args.in_flight, turn * args.in_flight
        for i in range(first_new, first_new + args.in_flight):
            await admit(i)
        admitting += redis.take()
        for start in range(first_old, first_old + args.in_flight, args.batch):
            ids = range(start, min(start + args.batch, first_old + args.in_flight))
            await store.settle_many([(f"req_{i:032x}", 5, 16, names) for i in ids], _POSITION)
        settling += redis.take()
    return admitting, settling


async def _main(args: argparse.Namespace) -> None:
    url = f"redis://127.0.0.1:{args.port}/0"
    redis = _Profiled(args.port, args.redis_option)
    try:
        await _ready(url)
        store = RedisCounterStore(url, prefix="cost:")
        try:
            admitting, settling = await _replay(store, redis, args)
        finally:
            await store.clear()
            await store.close()
    finally:
        redis.stop()
    calls = args.rounds * args.in_flight
    print(f"{calls} calls, {args.in_flight} in flight, settled {args.batch} a batch"
          f"{', ' + ', '.join(args.redis_option) if args.redis_option else ''}")
    print(f"  admission    {admitting / calls:9,.0f} instructions of Redis per call")
    print(f"  settle       {settling / calls:9,.0f}")
    print(f"  together     {(admitting + settling) / calls:9,.0f}")


if __name__ == "__main__":
    asyncio.run(_main(_options()))
