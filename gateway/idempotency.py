"""``Idempotency-Key`` on every POST of the proxy (CONTRACT.md, "Idempotency").

The same key (per virtual key, for ``KEEP_S``) with the same body gets the first call's answer
again, byte for byte as it was sent (a stream replays as the same stream), with
``x-nemo-idempotent-replay: true``: the call is sent upstream and charged once. The first call
claims the key in the counter store (shared by every worker); a duplicate that arrives while
it runs waits for its answer; the same key with another body is a 422. Only a successful
answer is kept: a first call that failed gives its claim up, so a retry runs.

The answer is kept as the client received it (``AnswerCapture`` stands in the call's ``send``),
so every dialect's replay is its own first answer, whatever ids its rendering made up.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Callable
from dataclasses import dataclass

import orjson

from counters import CounterStore
from gateway.errors import GatewayError

logger = logging.getLogger(__name__)

HEADER = "Idempotency-Key"
REPLAY_HEADER = "x-nemo-idempotent-replay"
KEEP_S = 24 * 3600
# A claim whose call never ends (its worker died) frees itself after this long: longer than a
# call may run. Its duplicates wait that long at most.
PENDING_S = 15 * 60
# An answer larger than this is not kept (a retry runs again): a kept answer lives in Redis's memory.
MAX_KEPT_BYTES = 1024 * 1024
MAX_KEY_LENGTH = 255
# A duplicate waiting for the first call looks again this often, up to this often.
FIRST_POLL_S = 0.02
MAX_POLL_S = 0.25
# Headers of the first answer that are the first call's own, not its answer's.
_OWN_HEADERS = frozenset({b"x-nemo-request-id", b"x-nemo-cost", b"content-length"})


@dataclass(slots=True)
class Claim:
    """This call's claim of its key: its answer kept, or the claim dropped, once."""

    name: str
    fingerprint: str
    ended: bool = False

    async def keep(self, store: CounterStore, headers: list, body: bytes) -> None:
        kept = orjson.dumps([[name.decode("latin-1"), value.decode("latin-1")] for name, value in headers
                             if name.lower() not in _OWN_HEADERS]) + b"\n" + body
        await store.idempotency_keep(self.name, self.fingerprint, kept, ttl_s=KEEP_S)
        self.ended = True

    async def drop(self, store: CounterStore) -> None:
        if not self.ended:
            self.ended = True
            await store.idempotency_drop(self.name, self.fingerprint)


@dataclass(slots=True)
class KeptAnswer:
    """The first call's answer: its headers (but its own id and cost) and its body, as sent."""

    headers: list[tuple[bytes, bytes]]
    body: bytes

    @classmethod
    def parse(cls, kept: bytes) -> KeptAnswer:
        head, body = kept.split(b"\n", 1)
        return cls([(name.encode("latin-1"), value.encode("latin-1")) for name, value in orjson.loads(head)], body)

    async def replay(self, send, headers: dict[str, str]) -> None:
        own = [(name.encode(), value.encode()) for name, value in headers.items()]
        names = {name for name, _ in own}
        await send({"type": "http.response.start", "status": 200,
                    "headers": [*own, *((n, v) for n, v in self.headers if n not in names)]})
        await send({"type": "http.response.body", "body": self.body})


class AnswerCapture:
    """The call's ``send``, keeping a copy of a successful answer for its claim: its last body
    message goes to the client once the answer is kept, so a retry that follows it finds it."""

    __slots__ = ("send", "claim", "store", "succeeded", "status", "headers", "body", "size")

    def __init__(self, send, claim: Claim, store: CounterStore, *, succeeded: Callable[[], bool]) -> None:
        self.send, self.claim, self.store, self.succeeded = send, claim, store, succeeded
        self.status, self.headers, self.body, self.size = 0, [], [], 0

    async def __call__(self, message: dict) -> None:
        if message["type"] == "http.response.start":
            self.status, self.headers = message["status"], message.get("headers", [])
        elif message["type"] == "http.response.body":
            chunk = message.get("body", b"")
            self.size += len(chunk)
            if self.size <= MAX_KEPT_BYTES:
                self.body.append(chunk)
            if not message.get("more_body") and self.status == 200 and self.succeeded():
                await self._keep()
        await self.send(message)

    async def _keep(self) -> None:
        if self.size > MAX_KEPT_BYTES:
            logger.info("an answer of %d bytes is over the Idempotency-Key limit and is not kept", self.size)
            return
        try:
            await self.claim.keep(self.store, self.headers, b"".join(self.body))
        except Exception:
            # The call is done and charged; the claim is given up, and a retry runs again.
            logger.exception("an answer could not be kept for its Idempotency-Key")


def idempotency_key_reused() -> GatewayError:
    return GatewayError(422, f"This {HEADER} was used with another request body (or endpoint) in the last 24 hours; "
                        "use a new key for a new request.", type="invalid_request_error",
                        code="idempotency_key_reused", param=HEADER)


def _invalid_key() -> GatewayError:
    return GatewayError(400, f"{HEADER} must be 1 to {MAX_KEY_LENGTH} characters.", type="invalid_request_error",
                        code="invalid_request", param=HEADER)


async def claim_or_answer(store: CounterStore, *, key_id: int, idempotency_key: str, endpoint: str,
                          body: bytes) -> Claim | KeptAnswer:
    """This call's claim of its key, or the answer kept for it (the first call's, waited for if
    it is still running). Raises the 422 of a key used with another body."""
    if not idempotency_key or len(idempotency_key) > MAX_KEY_LENGTH:
        raise _invalid_key()
    name = f"{key_id}:{hashlib.sha256(idempotency_key.encode()).hexdigest()}"
    fingerprint = hashlib.sha256(endpoint.encode() + b"\x00" + body).hexdigest()
    poll = FIRST_POLL_S
    # A claim lives PENDING_S at most: the wait ends with an answer, or with this call's claim.
    while True:
        status, answer = await store.idempotency_claim(name, fingerprint, pending_s=PENDING_S)
        if status == "claimed":
            return Claim(name, fingerprint)
        if status == "done":
            return KeptAnswer.parse(answer)
        if status == "reused":
            raise idempotency_key_reused()
        await asyncio.sleep(poll)
        poll = min(poll * 2, MAX_POLL_S)
