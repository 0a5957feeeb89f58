"""The two asyncio clients: a fixed-rate (open-loop) latency probe and the slow-stream holder.

wrk is closed-loop: each connection sends its next request when the previous answer arrives, so
it finds the maximum throughput but its latencies are those of a saturated server. Latency is
measured here instead, at a fixed arrival rate below saturation: requests start on schedule
whether or not earlier ones have finished, each on its own task, so a slow answer delays no
later request (no coordinated omission).
"""

from __future__ import annotations

import asyncio
import re
import statistics
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field

import aiohttp
import uvloop

from bench.load import request_body

# Requests starting this late (p99) mean the client, sharing its CPU with the fake upstream, could
# not keep to its schedule.
CLIENT_LAG_LIMIT_MS = 10.0


def percentile(values: list[float], fraction: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(fraction * (len(ordered) - 1))))
    return ordered[index]


@dataclass
class LatencySample:
    rate: float
    seconds: float
    sent: int = 0
    ok: int = 0
    errors: Counter = field(default_factory=Counter)
    latencies_ms: list[float] = field(default_factory=list)
    start_lag_ms: list[float] = field(default_factory=list)

    def summary(self) -> dict:
        return {
            "rate": round(self.rate, 1),
            "sent": self.sent,
            "ok": self.ok,
            "errors": dict(self.errors),
            "p50_ms": round(percentile(self.latencies_ms, 0.50), 3),
            "p99_ms": round(percentile(self.latencies_ms, 0.99), 3),
            "mean_ms": round(statistics.fmean(self.latencies_ms), 3) if self.latencies_ms else float("nan"),
            "client_start_lag_p99_ms": round(percentile(self.start_lag_ms, 0.99), 3),
            "client_bound": self.client_bound(),
        }

    def client_bound(self) -> bool:
        """The client itself fell behind its schedule: the latencies then measure it, not the server."""
        return not percentile(self.start_lag_ms, 0.99) <= CLIENT_LAG_LIMIT_MS


async def _timed_call(session: aiohttp.ClientSession, url: str, headers: dict, body: bytes, stream: bool,
                      due: float, sample: LatencySample | None) -> None:
    started = time.perf_counter()
    try:
        async with session.post(url, data=body, headers=headers) as response:
            payload = await response.read()
            finished = time.perf_counter()
            complete = b"[DONE]" in payload if stream else b'"choices"' in payload
            if response.status != 200 or not complete:
                if sample is not None:
                    sample.errors[f"status {response.status}" if response.status != 200 else "incomplete"] += 1
                return
    except (TimeoutError, aiohttp.ClientError) as error:
        if sample is not None:
            sample.errors[type(error).__name__] += 1
        return
    if sample is not None:
        sample.ok += 1
        sample.latencies_ms.append((finished - started) * 1000)
        sample.start_lag_ms.append((started - due) * 1000)


async def _fixed_rate(url: str, headers: dict, *, model: str, stream: bool, rate: float, seconds: float,
                      warmup: float) -> LatencySample:
    sample = LatencySample(rate=rate, seconds=seconds)
    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0), timeout=timeout) as session:
        tasks: set[asyncio.Task] = set()
        start = time.perf_counter()
        total = int(rate * (warmup + seconds))
        warmup_count = int(rate * warmup)
        for serial in range(total):
            due = start + serial / rate
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            recorded = sample if serial >= warmup_count else None
            if recorded is not None:
                sample.sent += 1
            body = request_body(model=model, stream=stream, serial=serial)
            task = asyncio.create_task(_timed_call(session, url, headers, body, stream, due, recorded))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        if tasks:
            await asyncio.wait(tasks)
    return sample


def fixed_rate(url: str, *, key: str, model: str, stream: bool, rate: float, seconds: float,
               warmup: float) -> LatencySample:
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {key}"}
    # On uvloop: the client shares its CPU with the upstream (and Redis and PostgreSQL), so the
    # less CPU it takes per request, the less it delays their answers.
    return uvloop.run(_fixed_rate(url, headers, model=model, stream=stream, rate=rate, seconds=seconds,
                                  warmup=warmup))


@dataclass
class StreamHold:
    streams: int
    hold_seconds: float
    completed: int = 0
    errors: Counter = field(default_factory=Counter)
    peak_open: int = 0
    all_open_at_once: bool = False
    seconds_to_open_all: float | None = None
    peak_rss_kib: int = 0
    rss_samples: int = 0
    wall_seconds: float = 0.0
    examples: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        result = asdict(self)
        result["errors"] = dict(self.errors)
        return result

    def fail(self, kind: str, example: str) -> None:
        self.errors[kind] += 1
        if len(self.examples) < 3:
            self.examples.append(example)


def _stream_is_whole(payload: bytes) -> bool:
    """Every tick the upstream sent arrived: it reports their number as the completion tokens."""
    usage = re.search(rb'"completion_tokens": ?(\d+)', payload)
    return (
        usage is not None and payload.count(b' tick"') == int(usage.group(1))
        and payload.rstrip().endswith(b"data: [DONE]")
    )


async def _hold_streams(url: str, headers: dict, *, model: str, streams: int, ramp: float, hold_seconds: float,
                        open_timeout: float, release: Callable[[], Awaitable[None]],
                        rss_of_server: Callable[[], int]) -> StreamHold:
    hold = StreamHold(streams=streams, hold_seconds=hold_seconds)
    open_now = 0
    settled = 0
    everyone_in = asyncio.Event()
    timeout = aiohttp.ClientTimeout(total=open_timeout + hold_seconds + 120, sock_connect=open_timeout)

    def arrived() -> None:
        nonlocal settled
        settled += 1
        if settled == streams:
            everyone_in.set()

    async def one(serial: int) -> None:
        nonlocal open_now
        await asyncio.sleep(ramp * serial / streams)
        body = request_body(model=model, stream=True, serial=serial)
        counted = False
        try:
            async with session.post(url, data=body, headers=headers) as response:
                if response.status != 200:
                    answer = await response.read()
                    hold.fail(f"status {response.status}", f"status {response.status}: {answer[:300]!r}")
                    return
                first = await response.content.readany()
                open_now += 1
                counted = True
                hold.peak_open = max(hold.peak_open, open_now)
                arrived()
                payload = first + await response.read()
            if not _stream_is_whole(payload):
                hold.fail("incomplete stream", f"ends with {payload[-300:]!r}")
                return
            hold.completed += 1
        except (TimeoutError, aiohttp.ClientError, OSError) as error:
            hold.fail(type(error).__name__, repr(error))
        finally:
            if counted:
                open_now -= 1
            else:
                arrived()

    async def sample_rss(stop: asyncio.Event) -> None:
        while not stop.is_set():
            hold.peak_rss_kib = max(hold.peak_rss_kib, rss_of_server())
            hold.rss_samples += 1
            try:
                await asyncio.wait_for(stop.wait(), timeout=0.2)
            except TimeoutError:
                pass

    connector = aiohttp.TCPConnector(limit=0, force_close=True)
    began = time.perf_counter()
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        stop = asyncio.Event()
        sampler = asyncio.create_task(sample_rss(stop))
        clients = asyncio.gather(*(one(serial) for serial in range(streams)))
        try:
            await asyncio.wait_for(everyone_in.wait(), timeout=open_timeout)
            hold.seconds_to_open_all = round(time.perf_counter() - began, 2)
        except TimeoutError:
            pass
        hold.all_open_at_once = hold.peak_open == streams
        # Every stream is open (or has failed): hold them all for a while, then let them finish.
        await asyncio.sleep(hold_seconds)
        await release()
        await clients
        stop.set()
        await sampler
    hold.wall_seconds = round(time.perf_counter() - began, 2)
    return hold


def hold_streams(url: str, *, key: str, model: str, streams: int, ramp: float, hold_seconds: float,
                 open_timeout: float, release_url: str, rss_of_server: Callable[[], int]) -> StreamHold:
    """Opens ``streams`` streams that the fake upstream keeps ticking until ``release_url`` is posted."""
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {key}"}

    async def release() -> None:
        async with aiohttp.ClientSession() as session, session.post(release_url) as response:
            response.raise_for_status()

    return asyncio.run(_hold_streams(url, headers, model=model, streams=streams, ramp=ramp,
                                     hold_seconds=hold_seconds, open_timeout=open_timeout, release=release,
                                     rss_of_server=rss_of_server))
