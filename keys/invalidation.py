"""Tells every gateway worker that a key, an org's settings or the model catalog changed.

Workers cache keys and the routing config (with the catalog's prices) for the hot path; a
revoked key must be refused on the very next call. The local process hears it at once; other
processes hear it on a Redis channel.
"""

import json
import logging

from django.conf import settings

logger = logging.getLogger(__name__)

CHANNEL = "nemo:invalidate"
_listeners: list = []


def on_key_changed(listener) -> None:
    """Registers a callable ``listener(prefix=..., org_id=..., catalog=...)`` run in this process
    (possibly from another thread than the listener's own)."""
    _listeners.append(listener)


def forget(listener) -> None:
    if listener in _listeners:
        _listeners.remove(listener)


def key_changed(*, prefix: str | None = None, org_id: int | None = None) -> None:
    _tell({"prefix": prefix, "org_id": org_id, "catalog": False})


def catalog_changed() -> None:
    _tell({"prefix": None, "org_id": None, "catalog": True})


def _tell(message: dict) -> None:
    for listener in _listeners:
        listener(**message)
    if settings.REDIS_URL:
        import redis

        try:
            client = redis.Redis.from_url(settings.REDIS_URL)
            client.publish(CHANNEL, json.dumps(message))
            client.close()
        except redis.RedisError:
            # Workers also expire cached keys after a few seconds, so a lost message only delays.
            logger.exception("could not publish an invalidation")
