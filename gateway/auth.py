"""Step 1 of the pipeline: who is calling.

Keys are cached per worker as immutable snapshots (key, org settings and the budgets that apply),
so an authenticated call costs no query; and once a snapshot's secret has been checked against its
stored HMAC, later calls compare a SHA-256 of the secret they send with the one that passed
(OpenSSL's HMAC by digest name cost ~2 µs hot and far more on a loaded worker's cold caches).
A change to a key, its budgets or its org drops the snapshot at once in this process and, through
Redis, in every other worker; entries also expire after a short while as a safety net.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import time
from dataclasses import dataclass

from billing.money import to_micros
from gateway.db import db_read
from gateway.errors import invalid_api_key
from gateway.singleflight import shared_run
from keys import secrets

SNAPSHOT_TTL_S = 30.0


@dataclass(frozen=True, slots=True)
class BudgetLimit:
    level: str  # key | team | org
    owner_id: int
    limit_micros: int
    period: str


@dataclass(frozen=True, slots=True)
class KeySnapshot:
    id: int
    prefix: str
    secret_hash: str
    name: str
    org_id: int
    team_id: int | None
    allowed_models: frozenset[str]
    rpm_limit: int | None
    tpm_limit: int | None
    max_parallel: int | None
    expires_at: float | None
    revoked: bool
    budgets: tuple[BudgetLimit, ...]
    credits_micros: int
    org_cache_enabled: bool
    org_store_prompts: bool
    loaded_at: float

    def usable(self, now: float) -> bool:
        return not self.revoked and (self.expires_at is None or self.expires_at > now)

    def may_use(self, model: str) -> bool:
        return not self.allowed_models or model in self.allowed_models


def _load_snapshot(prefix: str) -> KeySnapshot | None:
    from billing.selectors import budgets_for_key, credits_granted
    from keys.models import VirtualKey

    key = VirtualKey.objects.select_related("org").filter(prefix=prefix).first()
    if key is None:
        return None
    budgets = tuple(
        BudgetLimit(
            level=level,
            owner_id={"key": key.pk, "team": key.team_id, "org": key.org_id}[level],
            limit_micros=to_micros(budget.amount),
            period=budget.period,
        )
        for level, budget in sorted(budgets_for_key(key=key).items())
    )
    return KeySnapshot(
        id=key.pk,
        prefix=key.prefix,
        secret_hash=key.secret_hash,
        name=key.name,
        org_id=key.org_id,
        team_id=key.team_id,
        allowed_models=frozenset(key.allowed_models or ()),
        rpm_limit=key.rpm_limit,
        tpm_limit=key.tpm_limit,
        max_parallel=key.max_parallel,
        expires_at=key.expires.timestamp() if key.expires else None,
        revoked=key.revoked is not None,
        budgets=budgets,
        credits_micros=to_micros(credits_granted(org_id=key.org_id)),
        org_cache_enabled=key.org.cache_enabled,
        org_store_prompts=key.org.store_prompts,
        loaded_at=time.monotonic(),
    )


class KeyCache:
    def __init__(self, ttl_s: float = SNAPSHOT_TTL_S) -> None:
        self.ttl_s = ttl_s
        self._by_prefix: dict[str, KeySnapshot] = {}
        # prefix: (the snapshot, SHA-256 of the secret that passed its HMAC check).
        self._verified: dict[str, tuple[KeySnapshot, bytes]] = {}
        self._loading: dict[str, asyncio.Future] = {}
        # Bumped by every invalidation: a load that started before one must not be cached.
        self._generation = 0
        self._load = db_read(_load_snapshot)

    def invalidate(self, *, prefix: str | None = None, org_id: int | None = None) -> None:
        self._generation += 1
        self._loading.clear()
        if prefix is not None:
            self._by_prefix.pop(prefix, None)
            self._verified.pop(prefix, None)
        if org_id is not None:
            for cached_prefix, snapshot in list(self._by_prefix.items()):
                if snapshot.org_id == org_id:
                    self._by_prefix.pop(cached_prefix, None)
        if prefix is None and org_id is None:
            self._by_prefix.clear()
            self._verified.clear()

    async def authenticate(self, authorization: str | None) -> KeySnapshot:
        if not authorization or not authorization.startswith("Bearer "):
            raise invalid_api_key("Missing API key: send Authorization: Bearer sk-nemo-…")
        secret = authorization[7:].strip()
        if not secret.startswith(secrets.KEY_SCHEME):
            raise invalid_api_key()
        prefix = secrets.prefix_of(secret, secrets.KEY_SCHEME)
        snapshot = self._by_prefix.get(prefix)
        now = time.monotonic()
        if snapshot is None or now - snapshot.loaded_at > self.ttl_s:
            generation = self._generation
            # A burst of calls with a key this worker has not cached waits for one query.
            snapshot = await shared_run(self._loading, prefix, lambda: self._load(prefix))
            if snapshot is None:
                raise invalid_api_key()
            if generation == self._generation:
                self._by_prefix[prefix] = snapshot
        if not self._matches(prefix, secret, snapshot) or not snapshot.usable(time.time()):
            raise invalid_api_key()
        return snapshot

    def _matches(self, prefix: str, secret: str, snapshot: KeySnapshot) -> bool:
        fingerprint = hashlib.sha256(secret.encode()).digest()
        verified = self._verified.get(prefix)
        if verified is not None and verified[0] is snapshot:
            return hmac.compare_digest(fingerprint, verified[1])
        if not secrets.matches(secret, snapshot.secret_hash):
            return False
        self._verified[prefix] = (snapshot, fingerprint)
        return True
