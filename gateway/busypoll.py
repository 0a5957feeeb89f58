"""Busy polling: after activity, the worker's event loop keeps polling instead of sleeping.

A call wakes its worker several times (the request, the admission's reply, the upstream's
answer, the commit's reply). On a virtual machine, a loop that went to sleep in ``epoll_wait``
between two of them wakes up slowly and runs cold: at 1,000 calls a second the bench's worker
spent ~1.5x the CPU per call that it spends under full load, and every hop waited for that.
With ``NEMO_BUSY_POLL_US`` set, a task keeps the loop turning (each turn polls the sockets
without blocking) for that many microseconds after the worker last did anything, so the next
event is picked up at once, on warm caches. It trades CPU for latency, as the kernel's own
``busy_poll`` does: a worker with calls arriving keeps its CPU busy, and a worker left alone
goes back to sleep once the window has passed. Off by default.

What counts as activity: a call starting, its upstream answering, and its log row handed over
(each ``poke``s). Nothing else does: a poller that also took a slow turn of the loop for
activity never went back to sleep on an idle machine, whose turns are now and then slowed by
the machine itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import time


class BusyPoll:
    """``window_us`` 0: off (``poke`` does nothing, nothing polls)."""

    def __init__(self, window_us: int) -> None:
        self.window = window_us / 1e6
        self.turns = 0
        self._wake = asyncio.Event()
        self._task: asyncio.Task | None = None
        if not window_us:
            self.poke = _nothing

    def start(self) -> None:
        if self.window:
            self._task = asyncio.get_running_loop().create_task(self._run())

    def poke(self) -> None:
        """Something happened: keep polling for the next window."""
        if not self._wake.is_set():
            self._wake.set()

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        clock = time.perf_counter
        turn = asyncio.sleep
        wake = self._wake
        window = self.window
        while True:
            await wake.wait()
            wake.clear()
            until = clock() + window
            while True:
                # One turn of the loop: its sockets polled without blocking, whatever is ready run.
                await turn(0)
                self.turns += 1
                if wake.is_set():
                    wake.clear()
                    until = clock() + window
                elif clock() > until:
                    break


def _nothing() -> None:
    pass
