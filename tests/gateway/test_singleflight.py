"""Bursts of callers share one fetch."""

import asyncio

from gateway.singleflight import shared_run


async def test_a_burst_of_callers_shares_one_run():
    runs = 0

    async def fetch() -> str:
        nonlocal runs
        runs += 1
        await asyncio.sleep(0.01)
        return "value"

    pending: dict = {}
    answers = await asyncio.gather(*(shared_run(pending, "key", fetch) for _ in range(20)))
    again = await shared_run(pending, "key", fetch)

    assert answers == ["value"] * 20 and again == "value"
    assert runs == 2
    assert pending == {}


async def test_a_run_cleared_midway_does_not_drop_its_successor():
    first_done, second_done = asyncio.Event(), asyncio.Event()

    async def wait_for(event: asyncio.Event) -> str:
        await event.wait()
        return "done"

    pending: dict = {}
    first = asyncio.ensure_future(shared_run(pending, "key", lambda: wait_for(first_done)))
    await asyncio.sleep(0)
    pending.clear()
    second = asyncio.ensure_future(shared_run(pending, "key", lambda: wait_for(second_done)))
    await asyncio.sleep(0)
    successor = pending["key"]
    first_done.set()
    await first

    assert pending["key"] is successor
    second_done.set()
    await second
    assert pending == {}
