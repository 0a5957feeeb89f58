"""The response cache: identical requests within one org are answered from the counter store.

The key hashes the org with everything that shapes the answer (model, messages, tools and the
sampling parameters), so an answer can never cross an org's boundary. The cache is a saving,
not a promise: when Redis cannot be reached, a call is a miss and its answer is not kept.
"""

from __future__ import annotations

import hashlib
import json
import logging

logger = logging.getLogger(__name__)

CACHE_TTL_S = 3600
# Fields that do not change what the model answers.
_IGNORED = frozenset({"stream", "stream_options", "user", "metadata", "store"})


def cache_key(*, org_id: int, body: dict) -> str:
    shaping = {k: v for k, v in body.items() if k not in _IGNORED}
    digest = hashlib.sha256(json.dumps(shaping, sort_keys=True, separators=(",", ":")).encode()).hexdigest()
    return f"cache:{org_id}:{digest}"


def cache_wanted(*, request_choice: bool | None, org_default: bool) -> bool:
    return org_default if request_choice is None else request_choice


async def cache_get(store, key: str) -> dict | None:
    try:
        raw = await store.cache_get(key)
    except Exception as error:  # noqa: BLE001 - a miss
        logger.warning("the response cache could not be read: %s", error)
        return None
    return json.loads(raw) if raw else None


async def cache_put(store, key: str, completion: dict) -> None:
    try:
        await store.cache_set(key, json.dumps(completion, separators=(",", ":")).encode(), CACHE_TTL_S)
    except Exception as error:  # noqa: BLE001 - the answer is simply not kept
        logger.warning("the response cache could not be written: %s", error)
