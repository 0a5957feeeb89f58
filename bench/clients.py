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
from urllib.parse import urlsplit

import aiohttp
import httptools
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


class _Connection(asyncio.Protocol):
    """One keep-alive HTTP/1.1 connection of the fixed-rate client, one request at a time.

    The client shares its CPU with the upstream, Redis and PostgreSQL, so it is kept lean: the
    request is a prebuilt byte string and the answer is parsed by httptools (uvicorn's parser).
    An aiohttp client took about 2.5 times the CPU per request, which at half load left the
    helper CPU nearly full and measured its queueing rather than the servers."""

    def __init__(self, client: _FixedRateClient) -> None:
        self.client = client
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.body = bytearray()
        self.due = 0.0
        self.started = 0.0
        self.recorded = False

    def send(self, request: bytes, due: float, recorded: bool) -> None:
        self.body.clear()
        self.due, self.recorded = due, recorded
        self.started = time.perf_counter()
        self.transport.write(request)

    def connection_made(self, transport: asyncio.Transport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as error:
            self.client.failed(self, type(error).__name__)

    def on_body(self, body: bytes) -> None:
        self.body += body

    def on_message_complete(self) -> None:
        self.client.answered(self, time.perf_counter())

    def connection_lost(self, exc: Exception | None) -> None:
        self.client.failed(self, "ConnectionLost")


class _FixedRateClient:
    """Starts request ``serial`` at ``start + serial / rate`` whether or not earlier ones have
    finished (an idle connection if there is one, a new one otherwise)."""

    def __init__(self, url: str, headers: dict, *, model: str, stream: bool, rate: float, seconds: float,
                 warmup: float) -> None:
        parts = urlsplit(url)
        self.host, self.port = parts.hostname, parts.port
        head = f"POST {parts.path} HTTP/1.1\r\nHost: {parts.netloc}\r\n" + "".join(
            f"{name}: {value}\r\n" for name, value in headers.items())
        self.head = head.encode()
        self.model, self.stream, self.rate = model, stream, rate
        self.total = int(rate * (warmup + seconds))
        self.warmup_count = int(rate * warmup)
        self.marker = b"[DONE]" if stream else b'"choices"'
        self.sample = LatencySample(rate=rate, seconds=seconds)
        self.idle: list[_Connection] = []
        self.busy: set[_Connection] = set()
        self.connecting: set[asyncio.Task] = set()

    def request(self, serial: int) -> bytes:
        body = request_body(model=self.model, stream=self.stream, serial=serial)
        return b"%sContent-Length: %d\r\n\r\n%s" % (self.head, len(body), body)

    async def run(self) -> LatencySample:
        loop = asyncio.get_running_loop()
        start = time.perf_counter()
        for serial in range(self.total):
            due = start + serial / self.rate
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            recorded = serial >= self.warmup_count
            if recorded:
                self.sample.sent += 1
            if self.idle:
                self._send(self.idle.pop(), serial, due, recorded)
            else:
                task = loop.create_task(self._connect_and_send(serial, due, recorded))
                self.connecting.add(task)
                task.add_done_callback(self.connecting.discard)
        try:
            await asyncio.wait_for(self._until_answered(), timeout=30)
        except TimeoutError:
            self.sample.errors["TimeoutError"] += len(self.busy) + len(self.connecting)
        for connection in self.idle + list(self.busy):
            connection.transport.close()
        return self.sample

    async def _until_answered(self) -> None:
        while self.busy or self.connecting:
            await asyncio.sleep(0.01)

    async def _connect_and_send(self, serial: int, due: float, recorded: bool) -> None:
        try:
            _, connection = await asyncio.get_running_loop().create_connection(
                lambda: _Connection(self), self.host, self.port)
        except OSError as error:
            if recorded:
                self.sample.errors[type(error).__name__] += 1
            return
        self._send(connection, serial, due, recorded)

    def _send(self, connection: _Connection, serial: int, due: float, recorded: bool) -> None:
        self.busy.add(connection)
        connection.send(self.request(serial), due, recorded)

    def answered(self, connection: _Connection, finished: float) -> None:
        self.busy.discard(connection)
        self.idle.append(connection)
        if not connection.recorded:
            return
        status = connection.parser.get_status_code()
        if status != 200 or self.marker not in connection.body:
            self.sample.errors[f"status {status}" if status != 200 else "incomplete"] += 1
            return
        self.sample.ok += 1
        self.sample.latencies_ms.append((finished - connection.started) * 1000)
        self.sample.start_lag_ms.append((connection.started - connection.due) * 1000)

    def failed(self, connection: _Connection, kind: str) -> None:
        if connection in self.idle:
            self.idle.remove(connection)
        if connection in self.busy:
            self.busy.discard(connection)
            if connection.recorded:
                self.sample.errors[kind] += 1
        if not connection.transport.is_closing():
            connection.transport.close()


def fixed_rate(url: str, *, key: str, model: str, stream: bool, rate: float, seconds: float,
               warmup: float) -> LatencySample:
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {key}"}
    client = _FixedRateClient(url, headers, model=model, stream=stream, rate=rate, seconds=seconds, warmup=warmup)
    return uvloop.run(client.run())


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
