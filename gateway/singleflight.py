"""Concurrent callers asking for the same thing share one run of the work that fetches it."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Hashable
from typing import TypeVar

T = TypeVar("T")


async def shared_run(pending: dict[Hashable, asyncio.Future], key: Hashable, start: Callable[[], Awaitable[T]]) -> T:
    """A burst of callers for ``key`` waits for one ``start()``; ``pending`` holds the runs in flight
    (clearing it makes the next caller start afresh)."""
    running = pending.get(key)
    if running is None:
        running = pending[key] = asyncio.ensure_future(start())

        def forget(done: asyncio.Future) -> None:
            if pending.get(key) is done:
                del pending[key]

        running.add_done_callback(forget)
    # One caller giving up (its client went away) must not cancel the others' run.
    return await asyncio.shield(running)
