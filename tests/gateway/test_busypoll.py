"""Busy polling (NEMO_BUSY_POLL_US): the loop keeps turning after activity, and only then."""

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator

from analytics.models import RequestLog
from gateway.busypoll import BusyPoll
from tests.fakes.openai import FakeOpenAI
from tests.gateway.conftest import openai_routing

WINDOW_US = 20_000


@contextlib.asynccontextmanager
async def running(window_us: int = WINDOW_US) -> AsyncIterator[BusyPoll]:
    poll = BusyPoll(window_us)
    poll.start()
    try:
        yield poll
    finally:
        await poll.close()


async def turns_over(poll: BusyPoll, seconds: float) -> int:
    before = poll.turns
    await asyncio.sleep(seconds)
    return poll.turns - before


def test_it_sleeps_until_poked_and_again_once_the_window_has_passed():
    async def scenario():
        async with running() as poll:
            idle = await turns_over(poll, 0.05)
            poll.poke()
            polling = await turns_over(poll, 0.01)
            await asyncio.sleep(0.1)
            after_the_window = await turns_over(poll, 0.1)
            return idle, polling, after_the_window

    idle, polling, after_the_window = asyncio.run(scenario())

    assert idle == 0
    assert polling > 10
    assert after_the_window == 0


def test_work_on_the_loop_without_a_poke_does_not_keep_it_polling():
    async def scenario():
        async with running() as poll:
            poll.poke()
            # Something else runs on the loop every 5 ms for 0.2 s (ten windows), never poking.
            for _ in range(40):
                time.sleep(0.0002)
                await asyncio.sleep(0.005)
            return await turns_over(poll, 0.1)

    assert asyncio.run(scenario()) == 0


def test_a_poke_while_polling_restarts_the_window():
    async def scenario():
        async with running() as poll:
            poll.poke()
            for _ in range(10):  # 0.15 s of pokes, every 15 ms: each within the last one's window
                await asyncio.sleep(0.015)
                poll.poke()
            return await turns_over(poll, 0.01)

    assert asyncio.run(scenario()) > 0


def test_off_it_never_polls():
    async def scenario():
        async with running(0) as poll:
            poll.poke()
            await asyncio.sleep(0.01)
        return poll.turns

    assert asyncio.run(scenario()) == 0


def test_it_is_off_unless_set(start_gateway, make_tenant, monkeypatch):
    monkeypatch.setenv("FAKE_OPENAI_KEY", "upstream-secret")
    tenant = make_tenant()
    with FakeOpenAI() as fake:
        gateway = start_gateway(openai_routing(fake.base_url))
        gateway.client(tenant.secret).chat.completions.create(
            model="gpt-4o", messages=[{"role": "user", "content": "Hi"}], max_tokens=20)

    poll = gateway.app._state.busy_poll
    assert (poll.window, poll.turns) == (0, 0)


def test_a_gateway_that_busy_polls_serves_and_logs_calls(start_gateway, make_tenant, settings, monkeypatch):
    monkeypatch.setenv("FAKE_OPENAI_KEY", "upstream-secret")
    settings.NEMO_BUSY_POLL_US = 2_000
    tenant = make_tenant()
    with FakeOpenAI() as fake:
        gateway = start_gateway(openai_routing(fake.base_url))
        client = gateway.client(tenant.secret)
        answers = [
            client.chat.completions.with_raw_response.create(
                model="gpt-4o", messages=[{"role": "user", "content": f"Call {n}"}], max_tokens=20)
            for n in range(3)
        ]
        stream = client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "Stream"}],
                                                max_tokens=20, stream=True)
        text = "".join(chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices)

    poll = gateway.app._state.busy_poll
    assert poll.window == 0.002
    assert poll.turns > 0
    assert [a.parse().choices[0].message.content for a in answers] == [f"Fake answer to: Call {n}" for n in range(3)]
    assert text == "Fake answer to: Stream"
    ids = [a.headers["x-nemo-request-id"] for a in answers]
    assert RequestLog.objects.filter(request_id__in=ids).count() == 3
