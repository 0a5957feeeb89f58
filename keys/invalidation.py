"""Tells every gateway worker that what it caches changed: a key, an org's settings (with its
budgets and credits), or the model catalog.

Workers cache keys and the routing config (with the catalog's prices) for the hot path; a
revoked key must be refused on the very next call. Listeners in this process hear it at once;
other processes hear it on a Redis channel. One message says which: ``prefix`` (a key),
``org_id`` (every key of the org) or ``catalog`` (reload the routing config).

The listeners of a process are the gateway workers' states living in it, and a write anywhere in
the process must reach them all, so there is one ``Invalidations`` per process (``_process``);
the module's functions speak for it.
"""

import json
import logging
import threading
from collections.abc import Callable

from django.conf import settings

logger = logging.getLogger(__name__)

CHANNEL = "nemo:invalidate"

# Called as listener(prefix=..., org_id=..., catalog=...).
Listener = Callable[..., None]


class Invalidations:
    """The listeners of one process; the others are told on ``CHANNEL``."""

    def __init__(self) -> None:
        # Replaced whole, never changed in place: a message told from another thread goes to the
        # listeners there were when it began, however many come and go meanwhile.
        self._listeners: tuple[Listener, ...] = ()
        self._changing = threading.Lock()

    def listen(self, listener: Listener) -> None:
        """Registers ``listener``, run in this process on every change (possibly from another
        thread than the listener's own)."""
        with self._changing:
            self._listeners = (*self._listeners, listener)

    def forget(self, listener: Listener) -> None:
        with self._changing:
            # Equality, not identity: each reading of a bound method makes a new object.
            self._listeners = tuple(known for known in self._listeners if known != listener)

    def tell(self, *, prefix: str | None = None, org_id: int | None = None, catalog: bool = False) -> None:
        message = {"prefix": prefix, "org_id": org_id, "catalog": catalog}
        for listener in self._listeners:
            listener(**message)
        if settings.REDIS_URL:
            import redis

            from counters.cluster import pubsub_url

            try:
                client = redis.Redis.from_url(pubsub_url(settings.REDIS_URL))
                client.publish(CHANNEL, json.dumps(message))
                client.close()
            except redis.RedisError:
                # Workers also expire cached keys after a few seconds, so a lost message only delays.
                logger.exception("could not publish an invalidation")


_process = Invalidations()


def listen(listener: Listener) -> None:
    """Registers ``listener(prefix=..., org_id=..., catalog=...)``, run in this process on every
    change of a key, an org or the catalog (possibly from another thread than the listener's own)."""
    _process.listen(listener)


def forget(listener: Listener) -> None:
    _process.forget(listener)


def key_changed(*, prefix: str | None = None, org_id: int | None = None) -> None:
    _process.tell(prefix=prefix, org_id=org_id)


def catalog_changed() -> None:
    _process.tell(catalog=True)
