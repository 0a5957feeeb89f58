"""Tells every gateway worker that a key (or an org's settings) changed.

Workers cache keys for the hot path; a revoked key must be refused on the very next call. The
local process drops its entry at once; other processes hear it on a Redis channel.
"""

import json
import logging

from django.conf import settings

logger = logging.getLogger(__name__)

CHANNEL = "nemo:invalidate"
_listeners: list = []


def on_key_changed(listener) -> None:
    """Registers a callable ``listener(prefix=..., org_id=...)`` run in this process."""
    _listeners.append(listener)


def forget(listener) -> None:
    if listener in _listeners:
        _listeners.remove(listener)


def key_changed(*, prefix: str | None = None, org_id: int | None = None) -> None:
    for listener in _listeners:
        listener(prefix=prefix, org_id=org_id)
    if settings.REDIS_URL:
        import redis

        try:
            client = redis.Redis.from_url(settings.REDIS_URL)
            client.publish(CHANNEL, json.dumps({"prefix": prefix, "org_id": org_id}))
            client.close()
        except redis.RedisError:
            # Workers also expire cached keys after a few seconds, so a lost message only delays.
            logger.exception("could not publish a key invalidation")
