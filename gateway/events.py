"""The gateway's structured log: one JSON line per refused or failed call and per request for an
unknown route, on the logger ``gateway.events`` (``nemo.settings.LOGGING`` writes its lines as
they are, to stderr, apart from the other logs).

A line names the call by its request id and its key by the key's public prefix; it never carries
a secret (an ``Authorization`` that is not a well-formed Nemo key is not named at all), a prompt,
an answer, or an upstream's error message (which may quote the request): only the contract's
error code and the gateway's own words.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

import orjson

from gateway.http import header
from gateway.router import attempts_header
from keys import secrets

if TYPE_CHECKING:
    from gateway.pipeline import Call

logger = logging.getLogger("gateway.events")

# Client-chosen values are cut to this length: a log line stays a line of reasonable size.
MAX_VALUE = 200
# Statuses of a call that failed (rather than was refused): the gateway's fault or the upstream's,
# or a client that left.
FAILED = {499, 500, 502, 504}


def emit(event: str, level: int = logging.INFO, **fields) -> None:
    if logger.isEnabledFor(level):
        record = {"ts": round(time.time(), 3), "level": logging.getLevelName(level).lower(), "event": event, **fields}
        logger.log(level, orjson.dumps(record).decode())


def call_ended(call: Call, scope) -> None:
    """A line for a call that did not end in a 2xx (``gateway.pipeline.Call``); nothing otherwise."""
    if call.status < 400:
        return
    failed = call.status in FAILED
    snapshot = call.snapshot
    emit("call_failed" if failed else "call_refused", logging.WARNING if failed else logging.INFO,
         request_id=call.request_id,
         key=snapshot.prefix if snapshot is not None else key_prefix(header(scope, b"authorization")),
         org_id=snapshot.org_id if snapshot is not None else None,
         endpoint=call.endpoint,
         model=call.model[:MAX_VALUE],
         run_id=call.run_id or None,
         status=call.status,
         code=call.error_code or None,
         deployment=call.deployment or None,
         attempts=attempts_header(call.attempts) or None,
         latency_ms=int((time.monotonic() - call.started) * 1000))


def unknown_route(*, request_id: str, method: str, path: str, authorization: str | None) -> None:
    emit("unknown_route", request_id=request_id, key=key_prefix(authorization), method=method[:MAX_VALUE],
         path=path[:MAX_VALUE])


def key_prefix(authorization: str | None) -> str | None:
    """The public prefix of the Nemo key an ``Authorization`` header carries, if it carries one."""
    if not authorization or not authorization.startswith("Bearer "):
        return None
    secret = authorization[7:].strip()
    if not secrets.is_well_formed(secret, secrets.KEY_SCHEME):
        return None
    return secrets.prefix_of(secret, secrets.KEY_SCHEME)
