"""``POST /v1/chat/completions``: authenticate → limit and reserve → route and call → log → settle.

Each step is a module of its own; this file only strings them together, so a request can be
followed from top to bottom.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime

from analytics.ledger import DATABASE_ERRORS
from analytics.records import prompt_meta
from billing.money import call_cost_micros, from_micros
from billing.reservations import Reservation, Settlement, reserve
from gateway import cache
from gateway.auth import KeySnapshot
from gateway.errors import (
    GatewayError,
    internal_error,
    model_not_allowed,
    model_not_found,
    service_unavailable,
)
from gateway.http import SSE_DONE, header, read_body, send_json, sse_event, start_event_stream
from gateway.providers.base import UpstreamError
from gateway.request import ChatRequest, parse_chat_request
from gateway.router import Attempt, ChainFailed, Served, attempts_header, call_chain, eligible_links, order_links
from gateway.state import GatewayState
from gateway.streaming import CallSummary, completion_as_chunks

logger = logging.getLogger(__name__)

# A request the client gave up on; the nginx convention, since HTTP has no status for it.
CLIENT_CLOSED = 499


@dataclass
class Call:
    """Everything the log row and the response headers need, filled in as the call goes."""

    request_id: str
    started: float
    run_id: str
    snapshot: KeySnapshot | None = None
    request: ChatRequest | None = None
    model: str = ""
    attempts: list[Attempt] = field(default_factory=list)
    deployment: str = ""
    provider: str = ""
    cache_status: str = "skip"
    status: int = 200
    error: str = ""
    cost_micros: int = 0
    # What the call's real cost came to above what it reserved (an upstream that ignored the
    # output cap): charged all the same, and shown on its row.
    overshoot_micros: int = 0
    summary: CallSummary = field(default_factory=CallSummary)
    response: dict | None = None
    logged: bool = False
    # Wall clock: the budget period the call is reserved in, and the row's date in the ledger.
    arrived: float = field(default_factory=time.time)

    def headers(self) -> dict[str, str]:
        headers = {"x-nemo-request-id": self.request_id, "x-nemo-cache": self.cache_status}
        if self.deployment:
            headers["x-nemo-deployment"] = self.deployment
        if self.attempts:
            headers["x-nemo-attempts"] = attempts_header(self.attempts)
        return headers


async def handle_chat(state: GatewayState, scope, receive, send) -> None:
    call = Call(request_id=f"req_{random.getrandbits(128):032x}", started=time.monotonic(),
                run_id=(header(scope, b"x-nemo-run") or "")[:200])
    reservation: Reservation | None = None
    try:
        try:
            call.snapshot = await state.keys.authenticate(header(scope, b"authorization"))
        except DATABASE_ERRORS as error:
            raise _database_unavailable() from error
        try:
            raw = await read_body(receive)
        except ConnectionResetError as gone:
            call.status, call.error = CLIENT_CLOSED, str(gone)
            return
        request = call.request = parse_chat_request(raw, tags_header=header(scope, b"x-nemo-tags"))
        call.model = request.model
        route = state.config.models.get(request.model)
        if route is None:
            raise model_not_found(request.model)
        if not call.snapshot.may_use(request.model):
            raise model_not_allowed(request.model)
        links = eligible_links(route, tags=request.tags, needs_tools=request.has_tools)
        if not state.log_writer.available:
            # Nothing is served that could not be logged.
            raise _database_unavailable()

        cache_key = None
        if cache.cache_wanted(request_choice=request.use_cache, org_default=call.snapshot.org_cache_enabled):
            cache_key = cache.cache_key(org_id=call.snapshot.org_id, body=request.body)
            cached = await cache.cache_get(state.store, cache_key)
            call.cache_status = "miss"
            if cached is not None:
                await _answer_from_cache(state, call, cached, send)
                return

        links = await order_links(state.store, route, links)
        # A call that names no output limit is sent one: the output reserved for it.
        output_cap = None if request.max_tokens else route.max_output_tokens
        reservation = await reserve(
            state.store,
            reservation_id=call.request_id,
            snapshot=call.snapshot,
            prices=[link.price for link in links],
            prompt_tokens=request.prompt_bytes,
            output_tokens=(request.max_tokens or output_cap) * request.n,
            now=call.arrived,
            chain=[link.id for link in links],
            trail={"endpoint": "chat.completions", "model": call.model, "run_id": call.run_id,
                   "stream": request.stream, "deployments": [link.id for link in links]},
        )
        try:
            served = await call_chain(store=state.store, session=state.session, route=route, links=links,
                                      chain=reservation.chain, body=request.body, stream=request.stream,
                                      output_cap=output_cap)
        except ChainFailed as failure:
            call.attempts = failure.attempts
            raise
        state.busy_poll.poke()
        call.attempts = served.attempts
        call.deployment = served.deployment.id
        call.provider = served.deployment.provider_name
        if request.stream:
            await _relay_stream(state, call, served, receive, send, reservation)
            reservation = None
        else:
            call.summary.take_completion(served.completion)
            call.summary.first_token_at = time.monotonic()
            _charge(call, served, reservation)
            call.response = served.completion
            headers = {**call.headers(), **reservation.rate_headers, "x-nemo-cost": str(from_micros(call.cost_micros))}
            settling, reservation = reservation, None
            await _finish(state, call, settling)
            if cache_key is not None:
                await cache.cache_put(state.store, cache_key, served.completion)
            await send_json(send, 200, served.completion, headers)
            return
        if cache_key is not None and call.status == 200:
            await cache.cache_put(state.store, cache_key, call.summary.as_completion())
    except GatewayError as error:
        call.status = error.status
        call.error = error.message
        headers = {**call.headers(), **error.headers}
        if reservation is not None:
            headers.update(reservation.rate_headers)
        if call.snapshot is not None:
            settling, reservation = reservation, None
            if settling is None and not state.log_writer.available:
                # Refused before any upstream while the database is away: the row waits for it,
                # the client does not.
                _submit(state, call)
            elif not await _finished(state, call, settling):
                # Its row could not be written: the call did not complete (DESIGN.md).
                error, headers = internal_error(call.request_id), call.headers()
        await send_json(send, error.status, error.body(), headers)
    except Exception:
        # A bug of ours, or Redis/the database gone: the client still gets an answer in the
        # contract's shape, and the call still leaves its trail and releases its reservation.
        logger.exception("request %s failed inside the gateway", call.request_id)
        call.status = 500
        call.error = "internal error"
        if call.snapshot is not None and not call.logged:
            settling, reservation = reservation, None
            await _finished(state, call, settling)
        with contextlib.suppress(Exception):
            await send_json(send, 500, internal_error(call.request_id).body(), call.headers())
    finally:
        if call.snapshot is not None and not call.logged:
            await _finish(state, call, reservation)


def _database_unavailable() -> GatewayError:
    return service_unavailable("The request log's database cannot be reached; nothing was sent upstream.",
                               code="database_unavailable")


def _charge(call: Call, served: Served, reservation: Reservation) -> None:
    """The call's real cost, and what of it its reservation did not cover: the output cap is
    always sent, so only an upstream that ignored it can go over, and then the whole real cost
    is still charged (the budget's next calls are refused until it is back in bounds)."""
    call.cost_micros = _cost(served, call.summary)
    call.overshoot_micros = max(0, call.cost_micros - reservation.amount_micros)
    if call.overshoot_micros:
        logger.warning("request %s cost %d micro-dollars more than it reserved (%d): %s ignored its output cap",
                       call.request_id, call.overshoot_micros, reservation.amount_micros, call.deployment)


def _cost(served: Served, summary: CallSummary) -> int:
    price = served.deployment.price
    return call_cost_micros(
        prompt_tokens=summary.prompt_tokens,
        cached_tokens=summary.cached_tokens,
        completion_tokens=summary.completion_tokens,
        input_price=price.input,
        cached_input_price=price.cached_input,
        output_price=price.output,
    )


async def _answer_from_cache(state: GatewayState, call: Call, completion: dict, send) -> None:
    """A hit costs nothing and reserves nothing; it is logged like any call before it is sent."""
    call.cache_status = "hit"
    call.summary.take_completion(completion)
    call.summary.first_token_at = time.monotonic()
    call.response = completion
    await _finish(state, call, None)
    headers = {**call.headers(), "x-nemo-cost": "0.000000"}
    if not call.request.stream:
        await send_json(send, 200, completion, headers)
        return
    await start_event_stream(send, headers)
    events = [sse_event(chunk) for chunk in completion_as_chunks(completion)
              if chunk["choices"] or call.request.include_usage]
    await send({"type": "http.response.body", "body": b"".join(events) + SSE_DONE})


async def _relay_stream(
    state: GatewayState, call: Call, served: Served, receive, send, reservation: Reservation
) -> None:
    """Sends the upstream's chunks as they come and notices a client that goes away. The call
    is logged (and its settle sent) before the answer's last events, so it is durable once the
    client is done."""
    include_usage = call.request.include_usage
    # The events of the read that ended the answer: they go out with the stream's end, once the
    # call is logged (the client waits for that end anyway), in one write instead of two.
    held = b""
    # The response's head goes out with its first events, in the same turn of the loop, so the
    # two leave in one write (an answer that is all in at once: head and answer after the log).
    head: dict[str, str] | None = {**call.headers(), **reservation.rate_headers}

    async def write(body: bytes, *, more: bool) -> None:
        nonlocal head
        if head is not None:
            await start_event_stream(send, head)
            head = None
        await send({"type": "http.response.body", "body": body, "more_body": more})

    async def pump() -> None:
        nonlocal held
        # What one upstream read brought goes out in one write: nothing waits for more. A chunk
        # the upstream framed as it goes to the client is sent as it came, not encoded again.
        async for batch in served.chunks.events():
            events = []
            for chunk, encoded in batch:
                call.summary.take_chunk(chunk)
                if chunk.get("choices") or include_usage:
                    events.append(encoded or sse_event(chunk))
            if not events:
                continue
            if served.chunks.complete:
                held += b"".join(events)
            else:
                await write(b"".join(events), more=True)

    client_left = False

    async def watch_disconnect() -> None:
        nonlocal client_left
        while (await receive())["type"] != "http.disconnect":
            pass
        client_left = True
        # The upstream read the pump waits on ends at once (in an UpstreamError).
        served.chunks.abort()

    # The pump runs in this task; only the watch gets a task of its own, from the first time the
    # pump has to wait for the upstream (a client that left meanwhile is seen then): a stream
    # whose answer is in by then needs no watch.
    watching: asyncio.Future | None = None

    def watch() -> None:
        nonlocal watching
        if watching is None:
            watching = asyncio.create_task(watch_disconnect())

    if served.chunks.signals_waits:
        served.chunks.on_wait = watch
    else:
        watch()
    ending = SSE_DONE
    try:
        await pump()
    except UpstreamError as broken:
        if client_left:
            call.status = CLIENT_CLOSED
            call.error = "the client disconnected mid-stream"
        else:
            call.status = 502
            call.error = f"the upstream stream broke: {broken.message}"
            call.attempts[-1].outcome = "broken_stream"
            failure = GatewayError(502, call.error, type="upstream_error", code="upstream_error")
            ending = sse_event(failure.body()) + SSE_DONE
    finally:
        if watching is not None:
            watching.cancel()
        # try/except rather than contextlib.suppress on this path: a context manager object and
        # three calls per stream (~4 k instructions each).
        try:
            await served.chunks.aclose()
        except Exception:
            pass
    # Tokens the client did not wait for were still generated; charge a fair estimate of them.
    call.summary.estimate_usage(prompt_tokens=call.request.prompt_bytes // 4)
    _charge(call, served, reservation)
    call.response = call.summary.as_completion()
    await _finish(state, call, reservation)
    if not client_left:
        try:
            await write(held + ending, more=False)
        except OSError:
            pass


async def _finish(state: GatewayState, call: Call, reservation: Reservation | None) -> None:
    """Log, then settle: the log writer does both, in that order, and returns once the row is
    committed (gateway/logwriter.py)."""
    call.logged = True
    settlement = None
    if reservation is not None:
        tokens = call.summary.prompt_tokens + call.summary.completion_tokens
        settlement = Settlement(reservation, call.cost_micros, tokens)
    await state.log_writer.write(_log_row(call), settlement)


def _submit(state: GatewayState, call: Call) -> None:
    """The row of a call that reserved nothing, handed over without waiting for its commit."""
    call.logged = True
    state.log_writer.submit(_log_row(call))


async def _finished(state: GatewayState, call: Call, reservation: Reservation | None) -> bool:
    """``_finish``, telling rather than raising that the row could not be written."""
    try:
        await _finish(state, call, reservation)
    except Exception:
        logger.exception("request %s could not be logged", call.request_id)
        return False
    return True


def _log_row(call: Call) -> dict:
    """The request-log row, as the log writer inserts it (columns by attribute name)."""
    snapshot, request, summary = call.snapshot, call.request, call.summary
    store_bodies = snapshot.org_store_prompts and request is not None
    ttft = None
    if summary.first_token_at is not None:
        ttft = int((summary.first_token_at - call.started) * 1000)
    return dict(
        request_id=call.request_id,
        created=datetime.fromtimestamp(call.arrived, UTC),
        org_id=snapshot.org_id,
        team_id=snapshot.team_id,
        key_id=snapshot.id,
        key_prefix=snapshot.prefix,
        run_id=call.run_id,
        model=call.model,
        deployment=call.deployment,
        provider=call.provider,
        status=call.status,
        error=call.error,
        attempts=[a.as_dict() for a in call.attempts],
        stream=bool(request and request.stream),
        latency_ms=int((time.monotonic() - call.started) * 1000),
        ttft_ms=ttft,
        prompt_tokens=summary.prompt_tokens,
        completion_tokens=summary.completion_tokens,
        cached_tokens=summary.cached_tokens,
        cost=from_micros(call.cost_micros),
        overshoot=from_micros(call.overshoot_micros),
        finish_reason=summary.finish_reason,
        tool_calls=summary.tool_call_list(),
        tools_offered=[t["function"]["name"] for t in (request.body.get("tools") or [])] if request else [],
        prompt_meta=prompt_meta(request.messages) if request else {},
        cache=call.cache_status,
        request_body=request.body if store_bodies else None,
        response_body=call.response if store_bodies else None,
    )
