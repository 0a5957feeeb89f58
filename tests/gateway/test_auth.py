"""Step 1 of the pipeline under a flood of keys that do not exist: the worker's key cache
remembers an unknown key for a short while, never asks the database about a secret that cannot
be one, and asks about only a few keys at once."""

import asyncio

import httpx
import pytest

from gateway.auth import KeyCache, _load_snapshot
from gateway.db import db_read
from gateway.errors import GatewayError
from keys import secrets
from keys.audit import Actor
from keys.services import virtual_key_create

# Well formed (the scheme, 43 characters of base64url), and no key's.
UNKNOWN_SECRET = "sk-nemo-" + "u" * 12 + "N" * 31
FLOOD = 50


class CountingLoader:
    """The cache's loader (the database one unless told), counting the prefixes it is asked for
    and how many loads run at once."""

    def __init__(self, load=None, *, delay: float = 0.0) -> None:
        self.load = load or db_read(_load_snapshot)
        self.delay = delay
        self.prefixes: list[str] = []
        self.running = 0
        self.most_running = 0

    async def __call__(self, prefix: str):
        self.prefixes.append(prefix)
        self.running += 1
        self.most_running = max(self.most_running, self.running)
        try:
            await asyncio.sleep(self.delay)
            return await self.load(prefix)
        finally:
            self.running -= 1


async def nothing(prefix: str) -> None:
    return None


async def refusal(cache: KeyCache, secret: str) -> int:
    try:
        await cache.authenticate(f"Bearer {secret}")
    except GatewayError as refused:
        return refused.status
    return 200


def unknown_secret(number: int) -> str:
    return f"sk-nemo-{number:012d}" + "x" * 31


@pytest.mark.django_db(transaction=True)
async def test_the_same_unknown_key_again_and_again_costs_one_lookup():
    loader = CountingLoader()
    cache = KeyCache(load=loader)

    statuses = [await refusal(cache, UNKNOWN_SECRET) for _ in range(FLOOD)]

    assert statuses == [401] * FLOOD
    assert loader.prefixes == [secrets.prefix_of(UNKNOWN_SECRET, secrets.KEY_SCHEME)]


async def test_a_burst_of_the_same_unknown_key_at_once_costs_one_lookup():
    loader = CountingLoader(nothing, delay=0.01)
    cache = KeyCache(load=loader)

    statuses = await asyncio.gather(*(refusal(cache, UNKNOWN_SECRET) for _ in range(FLOOD)))

    assert statuses == [401] * FLOOD
    assert len(loader.prefixes) == 1


async def test_an_unknown_key_is_looked_up_again_once_its_while_is_over():
    loader = CountingLoader(nothing)
    cache = KeyCache(load=loader, unknown_ttl_s=0.0)

    await refusal(cache, UNKNOWN_SECRET)
    await refusal(cache, UNKNOWN_SECRET)

    assert len(loader.prefixes) == 2


async def test_the_unknown_keys_remembered_are_bounded_the_oldest_forgotten_first():
    loader = CountingLoader(nothing)
    cache = KeyCache(load=loader, max_unknown=3)

    for number in [1, 2, 3, 4, 1, 4]:
        await refusal(cache, unknown_secret(number))

    assert loader.prefixes == [f"{number:012d}" for number in [1, 2, 3, 4, 1]]


async def test_invalidating_a_prefix_forgets_that_it_was_unknown():
    loader = CountingLoader(nothing)
    cache = KeyCache(load=loader)
    await refusal(cache, UNKNOWN_SECRET)

    cache.invalidate(prefix=secrets.prefix_of(UNKNOWN_SECRET, secrets.KEY_SCHEME))
    await refusal(cache, UNKNOWN_SECRET)

    assert len(loader.prefixes) == 2


async def test_a_flood_of_different_unknown_keys_loads_only_a_few_at_once():
    loader = CountingLoader(nothing, delay=0.01)
    cache = KeyCache(load=loader, max_loads=3)

    statuses = await asyncio.gather(*(refusal(cache, unknown_secret(number)) for number in range(FLOOD)))

    assert statuses == [401] * FLOOD
    assert (len(loader.prefixes), loader.most_running) == (FLOOD, 3)


@pytest.mark.parametrize("secret", [
    "sk-nemo-short",
    "sk-nemo-" + "a" * 44,
    "sk-nemo-" + "a" * 42 + "!",
    "sk-nemo-" + "a" * 42 + "é",
    "sk-nemo-" + "a" * 42 + "=",
    "sk-nemo-" + "a" * 42 + " ",
])
async def test_a_secret_that_cannot_be_a_key_is_refused_without_a_lookup(secret):
    loader = CountingLoader(nothing)
    cache = KeyCache(load=loader)

    assert await refusal(cache, secret) == 401
    assert loader.prefixes == []


def test_a_key_created_after_its_prefix_was_remembered_as_unknown_authenticates(
    start_gateway, make_tenant, monkeypatch
):
    gateway = start_gateway()
    tenant = make_tenant()
    headers = {"Authorization": f"Bearer {UNKNOWN_SECRET}"}

    refused = httpx.get(f"{gateway.url}/v1/models", headers=headers)
    monkeypatch.setattr(secrets, "generate",
                        lambda scheme: (UNKNOWN_SECRET, secrets.prefix_of(UNKNOWN_SECRET, scheme)))
    virtual_key_create(org=tenant.org, name="late", actor=Actor.system("test"))
    accepted = httpx.get(f"{gateway.url}/v1/models", headers=headers)

    assert refused.status_code == 401
    assert accepted.status_code == 200
