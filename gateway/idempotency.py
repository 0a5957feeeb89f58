"""``Idempotency-Key`` on every POST of the proxy (CONTRACT.md, "Idempotency").

The same key (per virtual key, for ``KEEP_S``) with the same body gets the first call's answer
again, rendered as the client asked (a stream replays as a stream), with
``x-nemo-idempotent-replay: true``: the call is sent upstream and charged once. The first call
claims the key in the counter store (shared by every worker); a duplicate that arrives while
it runs waits for its answer; the same key with another body is a 422. Only a successful
answer is kept: a first call that failed gives its claim up, so a retry runs.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
from dataclasses import dataclass

from counters import CounterStore
from gateway.errors import GatewayError

logger = logging.getLogger(__name__)

HEADER = "Idempotency-Key"
KEEP_S = 24 * 3600
# A claim whose call never ends (its worker died) frees itself after this long: longer than a
# call may run.
PENDING_S = 15 * 60
# An answer larger than this is not kept (a retry runs again): a kept answer lives in Redis's memory.
MAX_KEPT_BYTES = 1024 * 1024
MAX_KEY_LENGTH = 255
# A duplicate waiting for the first call looks again this often, up to this often.
FIRST_POLL_S = 0.02
MAX_POLL_S = 0.25


@dataclass(slots=True)
class Claim:
    """This call's claim of its key: ``keep`` its answer, or ``drop`` the claim, once."""

    name: str
    fingerprint: str
    ended: bool = False

    async def keep(self, store: CounterStore, completion: dict) -> None:
        answer = json.dumps(completion, separators=(",", ":")).encode()
        if len(answer) > MAX_KEPT_BYTES:
            logger.info("an answer of %d bytes is over the Idempotency-Key limit and is not kept", len(answer))
            return
        await store.idempotency_keep(self.name, self.fingerprint, answer, ttl_s=KEEP_S)
        self.ended = True

    async def drop(self, store: CounterStore) -> None:
        if not self.ended:
            self.ended = True
            await store.idempotency_drop(self.name, self.fingerprint)


def idempotency_key_reused() -> GatewayError:
    return GatewayError(422, f"This {HEADER} was used with another request body (or endpoint) in the last 24 hours; "
                        "use a new key for a new request.", type="invalid_request_error",
                        code="idempotency_key_reused", param=HEADER)


def _invalid_key() -> GatewayError:
    return GatewayError(400, f"{HEADER} must be 1 to {MAX_KEY_LENGTH} characters.", type="invalid_request_error",
                        code="invalid_request", param=HEADER)


async def claim_or_answer(store: CounterStore, *, key_id: int, idempotency_key: str, endpoint: str,
                          body: bytes) -> Claim | dict:
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
            return json.loads(answer)
        if status == "reused":
            raise idempotency_key_reused()
        await asyncio.sleep(poll)
        poll = min(poll * 2, MAX_POLL_S)
