"""What the budget tests share: a fake upstream a test can hold or slow down, a routing file with
known prices (so every reservation is known to the micro-dollar), and readers of the ledger and
of the counters."""

from __future__ import annotations

import asyncio
import json
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal

import aiohttp
from aiohttp import web
from django.db.models import Sum

from analytics.models import RequestLog
from billing.reservations import bucket_name, credits_bucket_name, worst_case_micros
from gateway.config import Price
from money import to_micros
from tests.fakes.behaviours import Behaviour, Reply
from tests.fakes.openai import FakeOpenAI

# USD per million tokens, i.e. micro-dollars per token: one call's cost is easy to reckon.
INPUT_PRICE = Decimal("1")
OUTPUT_PRICE = Decimal("1000")
MAX_TOKENS = 100
# The fake answers this, about 90 tokens: a call settles at about 90% of its reservation, so
# the budget, not the reservation alone, decides how many calls fit.
LONG_ANSWER = "x" * 360


def chat_body(*, max_tokens: int = MAX_TOKENS, stream: bool = False, content: str = "hello") -> bytes:
    """The exact bytes sent: the gateway reserves for every byte of them as a prompt token."""
    body = {"model": "gpt-4o", "messages": [{"role": "user", "content": content}], "max_tokens": max_tokens}
    if stream:
        body["stream"] = True
    return json.dumps(body).encode()


BODY = chat_body()


def reservation_micros(body: bytes = BODY, *, max_tokens: int = MAX_TOKENS) -> int:
    """What the gateway reserves for ``body`` against the routing below."""
    price = Price(input=INPUT_PRICE, cached_input=INPUT_PRICE, output=OUTPUT_PRICE)
    return worst_case_micros(prompt_tokens=len(body), output_tokens=max_tokens, prices=[price])


def priced_routing(fake: FakeOpenAI, **price) -> dict:
    """``gpt-4o`` served by one deployment on ``fake``, at a price of the test's choosing."""
    return {
        "providers": {"primary": {"type": "openai", "base_url": fake.base_url, "api_key_env": "FAKE_OPENAI_KEY"}},
        "deployments": [{
            "id": "gpt4o-primary", "provider": "primary", "model": "gpt-4o", "timeout_s": 30,
            "price": price or {"input": str(INPUT_PRICE), "output": str(OUTPUT_PRICE)},
        }],
        "models": {"gpt-4o": {"chain": ["gpt4o-primary"]}},
    }


@dataclass(frozen=True)
class Held:
    """Answer normally, but only once ``released`` is set: a call the test keeps in flight."""

    released: threading.Event


class ControlledOpenAI(FakeOpenAI):
    """The fake OpenAI server, which can also wait before answering (so a burst of calls is all
    in flight at once), stream one event every ``event_gap_s``, or hold a call (``Held``)."""

    def __init__(self, *, answer_delay_s: float = 0.0, event_gap_s: float = 0.0) -> None:
        super().__init__()
        self.answer_delay_s = answer_delay_s
        self.event_gap_s = event_gap_s

    async def _wait(self, behaviour: Behaviour | Held) -> None:
        await asyncio.sleep(self.answer_delay_s)
        while isinstance(behaviour, Held) and not behaviour.released.is_set():
            await asyncio.sleep(0.01)

    async def _plain(self, request: web.Request, behaviour, body: bytes) -> web.StreamResponse:
        await self._wait(behaviour)
        return await super()._plain(request, behaviour, body)

    async def _stream(self, request: web.Request, behaviour, events: list[bytes]) -> web.StreamResponse:
        await self._wait(behaviour)
        if not self.event_gap_s or not isinstance(behaviour, Reply | Held):
            return await super()._stream(request, behaviour, events)
        response = web.StreamResponse(headers={"Content-Type": self.stream_content_type})
        await response.prepare(request)
        for event in events:
            await response.write(event)
            await asyncio.sleep(self.event_gap_s)
        await response.write_eof()
        return response


def ledger_micros(**filters) -> int:
    """The ledger: the sum of the log rows' costs."""
    return to_micros(RequestLog.objects.filter(**filters).aggregate(total=Sum("cost"))["total"] or 0)


def bucket_of(level: str, tenant, *, period: str = "none", now: datetime | None = None) -> str:
    """The counter a tenant's calls are held in, at one level."""
    if level == "credits":
        return credits_bucket_name(tenant.org.pk)
    owner = {"key": tenant.key.pk, "team": tenant.key.team_id, "org": tenant.org.pk}[level]
    return bucket_name(tenant.org.pk, level, owner, period, now or datetime.now(UTC))


def counters(gateway, names: list[str]) -> dict[str, int | None]:
    """The counters as admission sees them (settled + reserved), read on the gateway's loop."""
    return gateway.on_loop(lambda state: state.store.read(names))


def reservations_left(gateway) -> list[str]:
    """The reservations no one has settled or released yet: those the reaper would release once
    past their deadlines."""
    return gateway.on_loop(lambda state: state.store.due(now=math.inf))


def post_chat(gateway, secret: str, body: bytes = BODY, **options) -> tuple[int, dict, dict]:
    """One call with exactly these bytes: (status, headers, body: parsed JSON, or the event stream)."""
    return asyncio.run(_post_all([gateway], secret, [body], **options))[0]


def burst(gateways: list, secret: str, *, calls: int, body: bytes = BODY) -> list[tuple[int, dict, dict]]:
    """``calls`` calls fired at once, spread over the gateways in turn."""
    return asyncio.run(_post_all(gateways, secret, [body] * calls))


async def _post_all(gateways: list, secret: str, bodies: list[bytes], timeout_s: float = 60):
    headers = {"Authorization": f"Bearer {secret}", "Content-Type": "application/json"}
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0),
                                     timeout=aiohttp.ClientTimeout(total=timeout_s)) as session:

        async def post(index: int, body: bytes):
            url = f"{gateways[index % len(gateways)].url}/v1/chat/completions"
            async with session.post(url, data=body, headers=headers) as response:
                headers_seen = {name.lower(): value for name, value in response.headers.items()}
                if response.content_type == "application/json":
                    return response.status, headers_seen, await response.json()
                return response.status, headers_seen, await response.text()

        return await asyncio.gather(*(post(i, body) for i, body in enumerate(bodies)))


def wait_until(condition: Callable[[], bool], *, timeout_s: float = 10.0, what: str = "the condition") -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def in_background(function: Callable, *args, **kwargs) -> Callable[[], object]:
    """Runs ``function`` in a thread; the returned callable joins it and gives its result."""
    outcome: dict = {}

    def run() -> None:
        try:
            outcome["value"] = function(*args, **kwargs)
        except BaseException as exc:  # noqa: BLE001 - handed to the test when it joins
            outcome["error"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()

    def join(timeout_s: float = 30.0):
        thread.join(timeout_s)
        if "error" in outcome:
            raise outcome["error"]
        return outcome["value"]

    return join
