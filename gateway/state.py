"""What a gateway worker keeps between requests: config, upstream session, counters, key cache."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from dataclasses import dataclass, field

import aiohttp
from django.conf import settings

from billing.reservations import Admissions
from counters import KEEPALIVE_S, CounterStore, counter_store_from_url
from counters.cluster import pubsub_url
from gateway import metrics
from gateway.auth import KeyCache
from gateway.busypoll import BusyPoll
from gateway.config import RoutingConfig, load_config
from gateway.db import db_read
from gateway.rebuild import CounterRebuilds
from gateway.recorder import Recorder
from gateway.responses_store import StoredResponses
from keys import invalidation

logger = logging.getLogger(__name__)


@dataclass
class GatewayState:
    config: RoutingConfig
    session: aiohttp.ClientSession
    store: CounterStore
    keys: KeyCache
    admissions: Admissions
    recorder: Recorder
    listener: asyncio.Task | None = None
    heartbeat: asyncio.Task | None = None
    loop: asyncio.AbstractEventLoop | None = None
    busy_poll: BusyPoll = field(default_factory=lambda: BusyPoll(0))
    stored_responses: StoredResponses = field(default_factory=StoredResponses)

    def changed(self, *, prefix: str | None = None, org_id: int | None = None, catalog: bool = False) -> None:
        """Something cached changed (see keys.invalidation); may be called from any thread."""
        if catalog:
            self.loop.call_soon_threadsafe(lambda: asyncio.ensure_future(self.reload_config()))
        else:
            self.keys.invalidate(prefix=prefix, org_id=org_id)

    async def reload_config(self) -> None:
        """New catalog prices reach the routing config; a call in flight keeps the one it began with."""
        try:
            self.config = await db_read(load_config)(settings.NEMO_ROUTER_CONFIG)
        except Exception:  # noqa: BLE001 - keep serving with the config we have
            logger.exception("could not reload the routing config; keeping the current one")

    @classmethod
    async def start(cls) -> GatewayState:
        config = await db_read(load_config)(settings.NEMO_ROUTER_CONFIG)
        store = counter_store_from_url(settings.REDIS_URL, prefix=settings.NEMO_REDIS_PREFIX,
                                       recovery_hold_s=settings.NEMO_RECOVERY_HOLD_S)
        session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0, ttl_dns_cache=300),
            timeout=aiohttp.ClientTimeout(total=None),
            auto_decompress=True,
            # One session serves every tenant: a cookie an upstream sets for one call must not
            # ride along on another tenant's.
            cookie_jar=aiohttp.DummyCookieJar(),
        )
        busy_poll = BusyPoll(settings.NEMO_BUSY_POLL_US)
        state = cls(
            config=config,
            session=session,
            store=store,
            keys=KeyCache(),
            admissions=Admissions(store, rebuild=CounterRebuilds(store)),
            recorder=Recorder(store, poke=busy_poll.poke),
            busy_poll=busy_poll,
        )
        state.loop = asyncio.get_running_loop()
        busy_poll.start()
        invalidation.listen(state.changed)
        if settings.REDIS_URL:
            state.listener = asyncio.get_running_loop().create_task(state._listen(pubsub_url(settings.REDIS_URL)))
        state.heartbeat = asyncio.get_running_loop().create_task(state._beat())
        return state

    async def _beat(self) -> None:
        """The counter store's heartbeat (``CounterStore.keepalive``): this worker's calls in flight
        keep their reservations, and get them back should Redis lose them."""
        failing = False
        while True:
            await asyncio.sleep(KEEPALIVE_S)
            try:
                await self.store.keepalive(now=time.time())
            except Exception as error:  # noqa: BLE001 - Redis away: the next beat tries again
                if not failing:
                    logger.warning("the counter store's heartbeat failed: %s", error)
                failing = True
            else:
                failing = False

    async def _listen(self, url: str) -> None:
        """Drops cached keys other processes changed (keys.invalidation publishes)."""
        import redis.asyncio as redis

        while True:
            client = redis.Redis.from_url(url)
            try:
                async with client.pubsub() as pubsub:
                    await pubsub.subscribe(invalidation.CHANNEL)
                    # Anything may have changed while we were not listening.
                    self.keys.invalidate()
                    async for message in pubsub.listen():
                        if message.get("type") == "message":
                            data = json.loads(message["data"])
                            self.changed(prefix=data.get("prefix"), org_id=data.get("org_id"),
                                         catalog=bool(data.get("catalog")))
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - Redis went away: keep trying, keys also expire
                logger.warning("key invalidation listener lost Redis; retrying", exc_info=True)
                await asyncio.sleep(1)
            finally:
                await client.aclose()

    async def close(self) -> None:
        invalidation.forget(self.changed)
        for task in (self.listener, self.heartbeat):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        await self.recorder.close()
        await self.stored_responses.close()
        await self.busy_poll.close()
        await self.session.close()
        await self.store.close()
        # What the last calls and commits tallied, before the worker's files are left as they are.
        metrics.flush()
