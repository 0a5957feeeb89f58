"""The response cache: identical requests within one org are answered from the counter store.

The key hashes the org with everything that shapes the answer (model, messages, tools and the
sampling parameters), so an answer can never cross an org's boundary. The cache is a saving,
not a promise: when Redis cannot be reached, a call is a miss and its answer is not kept.

An answer an upstream gave in its client's own wire format (a ``NativeCall``'s ``answer``: Claude's
Message, thinking blocks and signatures included) is kept beside the chat completion, and a hit
of a request in that wire format is answered with it: the same Message, its id included, as an
Idempotency-Key's replay is (``x-nemo-request-id`` names the hit's own row).
"""

from __future__ import annotations

import hashlib
import json
import logging

logger = logging.getLogger(__name__)

CACHE_TTL_S = 3600
# Fields that do not change what the model answers.
_IGNORED = frozenset({"stream", "stream_options", "user", "metadata", "store"})
# Where an entry keeps the native answer: {"wire": ..., "answer": its text}.
_NATIVE = "nemo_native"


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


def native_answer(cached: dict, native) -> dict:
    """The cached chat completion; its native answer handed to a request of that wire format
    (``native``, the request's ``NativeCall`` or None), which then answers with it."""
    kept = cached.pop(_NATIVE, None)
    if kept is not None and native is not None and kept.get("wire") == native.wire:
        native.answer = kept["answer"].encode()
    return cached


async def cache_put(store, key: str, completion: dict, native=None) -> None:
    """``native``: the request's ``NativeCall``, whose ``answer`` (if an upstream of its wire
    format gave one) is kept with the completion."""
    if native is not None and native.answer is not None:
        completion = {**completion, _NATIVE: {"wire": native.wire, "answer": native.answer.decode()}}
    try:
        await store.cache_set(key, json.dumps(completion, separators=(",", ":")).encode(), CACHE_TTL_S)
    except Exception as error:  # noqa: BLE001 - the answer is simply not kept
        logger.warning("the response cache could not be written: %s", error)
