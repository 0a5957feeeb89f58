"""Step 1 of the pipeline: who is calling.

Keys are cached per worker as immutable snapshots (key, org settings and the budgets that apply),
so an authenticated call costs no query; and once a snapshot's secret has been checked against its
stored HMAC, later calls compare a SHA-256 of the secret they send with the one that passed
(OpenSSL's HMAC by digest name cost ~2 µs hot and far more on a loaded worker's cold caches).
A change to a key, its budgets or its org drops the snapshot at once in this process and, through
Redis, in every other worker; entries also expire after a short while as a safety net.

Keys that do not exist cost little too. A secret that does not have the shape of ours is refused
without a lookup; a prefix that loaded no key is remembered as unknown for a while (a new key
announces its prefix, which forgets it); and only a few loads run at once, so a flood of random
keys waits for them instead of taking every database connection.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from gateway.db import db_read
from gateway.errors import GatewayError, invalid_api_key
from gateway.singleflight import shared_run
from keys import secrets
from money import to_micros

SNAPSHOT_TTL_S = 30.0
# A flood of one unknown key costs one query per while.
UNKNOWN_TTL_S = 10.0
# Random prefixes must not grow a worker's memory without bound: past this, the oldest go first.
MAX_UNKNOWN = 10_000
# Each load holds a database connection while it runs.
MAX_LOADS = 4


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
    # The most output a call that names no limit is sent: the key's, or its org's.
    default_max_tokens: int
    # A run's envelope (micro-dollars) and most steps, the run's loop guard (0: off): the key's.
    run_budget_micros: int | None
    run_max_steps: int | None
    loop_limit: int
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
        default_max_tokens=key.default_max_tokens or key.org.default_max_tokens,
        run_budget_micros=None if key.run_budget is None else to_micros(key.run_budget),
        run_max_steps=key.run_max_steps,
        loop_limit=key.loop_limit,
        expires_at=key.expires.timestamp() if key.expires else None,
        revoked=key.revoked is not None,
        budgets=budgets,
        credits_micros=to_micros(credits_granted(org_id=key.org_id)),
        org_cache_enabled=key.org.cache_enabled,
        org_store_prompts=key.org.store_prompts,
        loaded_at=time.monotonic(),
    )


class UnusableKey(GatewayError):
    """The 401 of a call whose secret is a key's but which may call no more (revoked, expired):
    unlike an unknown or a wrong secret, it is logged against that key, so its owner sees the
    attempts (``pipeline._run``)."""

    def __init__(self, snapshot: KeySnapshot) -> None:
        why = "was revoked" if snapshot.revoked else "has expired"
        super().__init__(401, f"This API key {why}.", type="authentication_error", code="invalid_api_key")
        self.snapshot = snapshot


class KeyCache:
    def __init__(
        self,
        ttl_s: float = SNAPSHOT_TTL_S,
        *,
        load: Callable[[str], Awaitable[KeySnapshot | None]] | None = None,
        unknown_ttl_s: float = UNKNOWN_TTL_S,
        max_unknown: int = MAX_UNKNOWN,
        max_loads: int = MAX_LOADS,
    ) -> None:
        self.ttl_s = ttl_s
        self.unknown_ttl_s = unknown_ttl_s
        self.max_unknown = max_unknown
        self._by_prefix: dict[str, KeySnapshot] = {}
        # prefix: (the snapshot, SHA-256 of the secret that passed its HMAC check).
        self._verified: dict[str, tuple[KeySnapshot, bytes]] = {}
        # prefix: when it loaded no key (monotonic), oldest first. Invalidations come from other
        # threads, and evicting the oldest takes more than one step: hence the lock.
        self._unknown: dict[str, float] = {}
        self._unknown_lock = threading.Lock()
        self._loading: dict[str, asyncio.Future] = {}
        self._loads = asyncio.Semaphore(max_loads)
        # Bumped by every invalidation: a load that started before one must not be cached.
        self._generation = 0
        self._load = load or db_read(_load_snapshot)

    def invalidate(self, *, prefix: str | None = None, org_id: int | None = None) -> None:
        self._generation += 1
        self._loading.clear()
        if prefix is not None:
            self._by_prefix.pop(prefix, None)
            self._verified.pop(prefix, None)
            with self._unknown_lock:
                self._unknown.pop(prefix, None)
        if org_id is not None:
            for cached_prefix, snapshot in list(self._by_prefix.items()):
                if snapshot.org_id == org_id:
                    self._by_prefix.pop(cached_prefix, None)
        if prefix is None and org_id is None:
            self._by_prefix.clear()
            self._verified.clear()
            with self._unknown_lock:
                self._unknown.clear()

    async def authenticate(self, authorization: str | None) -> KeySnapshot:
        if not authorization or not authorization.startswith("Bearer "):
            raise invalid_api_key("Missing API key: send Authorization: Bearer sk-nemo-…")
        secret = authorization[7:].strip()
        if not secrets.is_well_formed(secret, secrets.KEY_SCHEME):
            raise invalid_api_key()
        prefix = secrets.prefix_of(secret, secrets.KEY_SCHEME)
        snapshot = self._by_prefix.get(prefix)
        now = time.monotonic()
        if snapshot is None or now - snapshot.loaded_at > self.ttl_s:
            if self._known_unknown(prefix, now):
                raise invalid_api_key()
            generation = self._generation
            # A burst of calls with a key this worker has not cached waits for one query.
            snapshot = await shared_run(self._loading, prefix, lambda: self._load_one(prefix))
            if snapshot is None:
                if generation == self._generation:
                    self._remember_unknown(prefix)
                raise invalid_api_key()
            if generation == self._generation:
                self._by_prefix[prefix] = snapshot
        if not self._matches(prefix, secret, snapshot):
            raise invalid_api_key()
        if not snapshot.usable(time.time()):
            raise UnusableKey(snapshot)
        return snapshot

    async def _load_one(self, prefix: str) -> KeySnapshot | None:
        async with self._loads:
            return await self._load(prefix)

    def _known_unknown(self, prefix: str, now: float) -> bool:
        since = self._unknown.get(prefix)
        return since is not None and now - since < self.unknown_ttl_s

    def _remember_unknown(self, prefix: str) -> None:
        self._by_prefix.pop(prefix, None)
        with self._unknown_lock:
            self._unknown.pop(prefix, None)
            while self._unknown and len(self._unknown) >= self.max_unknown:
                del self._unknown[next(iter(self._unknown))]
            self._unknown[prefix] = time.monotonic()

    def _matches(self, prefix: str, secret: str, snapshot: KeySnapshot) -> bool:
        fingerprint = hashlib.sha256(secret.encode()).digest()
        verified = self._verified.get(prefix)
        if verified is not None and verified[0] is snapshot:
            return hmac.compare_digest(fingerprint, verified[1])
        if not secrets.matches(secret, snapshot.secret_hash):
            return False
        self._verified[prefix] = (snapshot, fingerprint)
        return True
