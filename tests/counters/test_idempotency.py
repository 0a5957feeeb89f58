"""Idempotency-Key entries (idempotency.lua) against Redis and the in-process store alike."""

from counters import CounterStore
from tests.counters import test_store

# The same stores as the contract tests: Redis and the in-process store.
open_worker, store = test_store.open_worker, test_store.store


async def test_the_first_claim_runs_its_call_and_its_duplicates_get_the_answer_it_kept(store: CounterStore) -> None:
    first = await store.idempotency_claim("k", "body-1", pending_s=60)
    while_running = await store.idempotency_claim("k", "body-1", pending_s=60)
    await store.idempotency_keep("k", "body-1", b'{"id":"a"}', ttl_s=60)
    after = await store.idempotency_claim("k", "body-1", pending_s=60)

    assert (first, while_running, after) == (("claimed", None), ("pending", None), ("done", b'{"id":"a"}'))


async def test_a_key_claimed_by_another_body_is_reused(store: CounterStore) -> None:
    await store.idempotency_claim("k", "body-1", pending_s=60)

    assert (await store.idempotency_claim("k", "body-2", pending_s=60))[0] == "reused"
    await store.idempotency_keep("k", "body-2", b"theirs", ttl_s=60)
    await store.idempotency_keep("k", "body-1", b"ours", ttl_s=60)
    assert await store.idempotency_claim("k", "body-1", pending_s=60) == ("done", b"ours")


async def test_a_dropped_claim_is_free_again_and_a_kept_answer_is_never_dropped(store: CounterStore) -> None:
    await store.idempotency_claim("failed", "body", pending_s=60)
    await store.idempotency_drop("failed", "body")
    await store.idempotency_claim("kept", "body", pending_s=60)
    await store.idempotency_keep("kept", "body", b"answer", ttl_s=60)
    await store.idempotency_drop("kept", "body")

    assert (await store.idempotency_claim("failed", "body", pending_s=60))[0] == "claimed"
    assert await store.idempotency_claim("kept", "body", pending_s=60) == ("done", b"answer")
