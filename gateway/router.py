"""Route and call: walk the model's fallback chain until a link answers.

A link is skipped while its circuit is open or it cools down after a provider's Retry-After.
Which links those are is read with the call's admission, in the same round trip to the counter
store (``ChainCheck``, counters' chain check: a circuit past its open period grants one probe, to
the first usable link only, and a refused call takes none); ``call_chain`` follows it, and
tells the store each probe's outcome and each failure (``breaker_record``), which open and
close the circuits. A timeout, connection error, 5xx or 429 moves the call to the next link; a
4xx that is the client's fault is answered as it is. Every attempt is recorded for the
response headers and the request log.

What an attempt teaches the shared state (a circuit's failures, a cooldown, a latency) is
advice for later calls: if Redis cannot take it, the call goes on without it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Literal

from counters import ChainCheck
from gateway.config import Deployment, ModelRoute
from gateway.errors import GatewayError, invalid_request, upstream_failed, upstream_rate_limited
from gateway.providers.base import ChunkStream, UpstreamError
from gateway.providers.shapes import Untranslatable, untranslatable

logger = logging.getLogger(__name__)

# How long a client is told to wait after an upstream 429 that named no Retry-After.
RATE_LIMITED_RETRY_S = 1.0

# Which provider method serves a call: ``complete``, ``stream``, ``embed`` or ``count`` (tokens).
CallMethod = Literal["complete", "stream", "embed", "count"]


@dataclass(slots=True)
class Attempt:
    deployment: str
    outcome: str
    latency_ms: int

    def as_dict(self) -> dict:
        return {"deployment": self.deployment, "outcome": self.outcome, "latency_ms": self.latency_ms}


class ChainFailed(GatewayError):
    """Every link failed (502), every link was rate limited (429), or the upstream refused the
    request itself (its 4xx)."""

    def __init__(self, error: GatewayError, attempts: list[Attempt]) -> None:
        super().__init__(error.status, error.message, type=error.type, code=error.code, param=error.param,
                         headers=error.headers)
        self.attempts = attempts


@dataclass(slots=True)
class Served:
    # (None: a token count that no link made, estimated instead.)
    deployment: Deployment | None
    attempts: list[Attempt]
    completion: dict | None = None
    chunks: ChunkStream | None = None


def eligible_links(route: ModelRoute, *, tags: frozenset[str], needs_tools: bool,
                   embeds: bool = False) -> list[Deployment]:
    """The links that can serve the call; ``embeds``: an embeddings call, which only an embedding
    model's deployments serve (and only they serve it)."""
    links = [d for d in route.chain
             if tags <= d.tags and (d.supports_tools or not needs_tools) and d.embeds == embeds]
    if not links and all(d.embeds != embeds for d in route.chain):
        if embeds:
            raise invalid_request(f"{route.name!r} is not an embedding model.", param="model")
        raise invalid_request(f"{route.name!r} is an embedding model: it serves POST /v1/embeddings.",
                              param="model")
    if not links:
        wanted = ", ".join(sorted(tags)) or "tool support"
        raise invalid_request(f"No deployment of {route.name!r} has {wanted}.", param="tags")
    return links


async def unprobed_chain(store, links: list[Deployment]) -> ChainCheck:
    """The chain check of a call that reserves nothing (a token count): a link whose circuit is
    not closed, or that cools down, is skipped; none is probed, as a count tests nothing of what a
    link answers."""
    deployments = [link.id for link in links]
    try:
        circuits = await store.circuits(deployments)
        cooling = await store.cooldowns_until(deployments, time.time())
    except Exception as error:  # noqa: BLE001 - every link then, as without Redis
        logger.warning("the router could not read the links' circuits: %s", error)
        return ChainCheck(skip=frozenset(), probes=frozenset())
    skip = {deployment for deployment, state in circuits.items() if state != "closed"} | set(cooling)
    return ChainCheck(skip=frozenset(skip), probes=frozenset())


async def order_links(store, route: ModelRoute, links: list[Deployment]) -> list[Deployment]:
    if route.routing != "latency":
        return links
    try:
        latencies = await store.latency_get([d.id for d in links])
    except Exception as error:  # noqa: BLE001 - the chain's own order then
        logger.warning("the router could not read the links' latencies: %s", error)
        return links
    # Unmeasured links go first, so every link gets measured; the chain order breaks ties.
    return sorted(links, key=lambda d: latencies.get(d.id) or 0.0)


def attempts_header(attempts: list[Attempt]) -> str:
    return ", ".join(f"{a.deployment}:{a.outcome}" for a in attempts)


async def _advise(update: Awaitable[None]) -> None:
    try:
        await update
    except Exception as error:  # noqa: BLE001 - advice for later calls; this one goes on
        logger.warning("the router could not record an attempt's outcome: %s", error)


async def call_chain(
    *, store, session, route: ModelRoute, links: list[Deployment], chain: ChainCheck, body: dict,
    method: CallMethod, output_cap: int | None = None, native=None,
) -> Served:
    """``links`` in the order to try them (``order_links``), ``chain`` their check (made with
    the call's admission). ``output_cap``: the output limit to send a call whose client named
    none (``Provider.prepare``).

    ``method``: the provider method each attempt calls, as the internal request says
    (``ChatRequest.method``, ``EmbeddingRequest.method``). The walk itself — skips, fallbacks,
    circuits, cooldowns, latencies, the attempts — is the same whatever the call is, so an
    endpoint that needs another kind of upstream call names its method rather than walking a
    chain of its own.

    ``native``: the call in its client's wire format (a ``NativeCall``), which a link whose
    provider speaks that format takes as it came (``Provider.complete_native``)."""
    unavailable = chain.skip
    cooling: dict[str, float] = {}
    if unavailable:
        try:
            cooling = await store.cooldowns_until(list(unavailable), time.time())
        except Exception as error:  # noqa: BLE001 - only the attempt's label depends on it
            logger.warning("the router could not read the cooldowns: %s", error)
    attempts: list[Attempt] = []
    # When each link that was rate limited (a 429, or cooling down after one) is free again.
    free_at: list[float] = []
    for link in links:
        if link.id in unavailable:
            if link.id in cooling:
                attempts.append(Attempt(link.id, "cooldown", 0))
                free_at.append(cooling[link.id])
            else:
                attempts.append(Attempt(link.id, "circuit_open", 0))
            continue
        started = time.monotonic()
        # Each provider puts the link's own model id where its wire format wants it.
        try:
            if method == "embed":
                embedding = await link.provider.embed(session, body=body, model=link.model, timeout_s=link.timeout_s)
                result = Served(deployment=link, attempts=attempts, completion=embedding)
            elif method == "count":
                count = await link.provider.count_tokens(session, body=body, native=native, model=link.model,
                                                         timeout_s=link.timeout_s)
                result = Served(deployment=link, attempts=attempts, completion=count)
            elif native is not None and native.wire == link.provider.native_wire:
                result = await _call_native(link, session, native, method, attempts)
            elif native is not None and native.only_native is not None:
                raise untranslatable(native.only_native[0], param=native.only_native[1])
            elif method == "stream":
                chunks = await link.provider.stream(session, body=body, model=link.model,
                                                    timeout_s=link.timeout_s, output_cap=output_cap)
                result = Served(deployment=link, attempts=attempts, chunks=chunks)
            else:
                completion = await link.provider.complete(session, body=body, model=link.model,
                                                          timeout_s=link.timeout_s, output_cap=output_cap)
                result = Served(deployment=link, attempts=attempts, completion=completion)
        except UpstreamError as error:
            latency_ms = int((time.monotonic() - started) * 1000)
            attempts.append(Attempt(link.id, error.outcome, latency_ms))
            if isinstance(error, Untranslatable):
                # Nothing was sent: this wire format cannot carry the request, and the client
                # has to change it (a probe tested nothing; its lease runs out).
                raise ChainFailed(
                    GatewayError(400, f"{link.id} cannot take this request: {error.message}",
                                 type="invalid_request_error", code="invalid_request", param=error.param),
                    attempts,
                ) from error
            if not error.retryable:
                # The link answered; the request was at fault. A probe that got this far passed.
                if link.id in chain.probes:
                    await _advise(store.breaker_record(link.id, True, time.time()))
                raise ChainFailed(
                    GatewayError(error.status or 400, f"The upstream refused the request: {error.message}",
                                 type="invalid_request_error", code="upstream_rejected"),
                    attempts,
                ) from error
            await _advise(store.breaker_record(link.id, False, time.time()))
            if route.routing == "latency":
                # A link that times out is a slow link, not an unmeasured one.
                await _advise(store.latency_record(link.id, latency_ms))
            if error.retry_after and error.status in (429, 503):
                await _advise(store.cooldown_set(link.id, time.time() + error.retry_after))
            if error.kind == "rate_limit":
                free_at.append(time.time() + (error.retry_after or RATE_LIMITED_RETRY_S))
            continue
        latency_ms = int((time.monotonic() - started) * 1000)
        attempts.append(Attempt(link.id, "ok", latency_ms))
        # A success changes nothing in a closed circuit; only a probe's success closes one.
        if link.id in chain.probes:
            await _advise(store.breaker_record(link.id, True, time.time()))
        if route.routing == "latency":
            await _advise(store.latency_record(link.id, latency_ms))
        return result
    if len(free_at) == len(attempts):
        # Only rate limits stood in the way: a 429 the client backs off on, not a failure.
        raise ChainFailed(upstream_rate_limited(
            f"Every deployment of {route.name!r} is rate limited by its provider: {attempts_header(attempts)}",
            retry_after_s=min(free_at) - time.time()), attempts)
    raise ChainFailed(upstream_failed(f"Every deployment of {route.name!r} failed: {attempts_header(attempts)}"),
                      attempts)


async def _call_native(link: Deployment, session, native, method: CallMethod, attempts: list[Attempt]) -> Served:
    """The call as its client sent it, to a link whose provider speaks the client's wire format."""
    if method == "stream":
        chunks = await link.provider.stream_native(session, native=native, model=link.model, timeout_s=link.timeout_s)
        return Served(deployment=link, attempts=attempts, chunks=chunks)
    completion = await link.provider.complete_native(session, native=native, model=link.model,
                                                     timeout_s=link.timeout_s)
    return Served(deployment=link, attempts=attempts, completion=completion)
