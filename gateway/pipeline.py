"""The steps every endpoint of the proxy shares, in order (``serve``):

    authenticate → parse → choose the links → admit (limits + reservation) → route and call
    along the chain → answer or relay → record (log row, then settle)

An endpoint supplies its client API (a ``Dialect``: parsing, rendering, its error shape); the
steps are the same for each. The call's reservation is the pipeline's: ``record`` is the one
place a reservation ends, settled at the call's real cost (nothing, if it ran up none), once,
whatever way the call ends.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime

from django.conf import settings

from analytics.ledger import DATABASE_ERRORS
from analytics.records import call_tags, prompt_meta
from billing.reservations import Refused, Reservation, RunLimits, Settlement
from counters import ChainCheck
from gateway import cache, events, metrics
from gateway.auth import KeySnapshot, UnusableKey
from gateway.config import Deployment, ModelRoute
from gateway.dialects import Dialect
from gateway.dialects.chat_completions_request import ChatRequest
from gateway.errors import (
    GatewayError,
    internal_error,
    model_not_allowed,
    model_not_found,
    refusal_error,
    service_unavailable,
)
from gateway.http import header, read_body
from gateway.idempotency import REPLAY_HEADER, AnswerCapture, Claim, KeptAnswer, claim_or_answer
from gateway.providers.base import estimated_count
from gateway.relay import StreamRelay, replay
from gateway.router import (
    Attempt,
    ChainFailed,
    Served,
    attempts_header,
    call_chain,
    eligible_links,
    order_links,
    unprobed_chain,
)
from gateway.runs import count_tool_calls, run_limits
from gateway.state import GatewayState
from gateway.summary import CallSummary
from money import call_cost_micros, from_micros

logger = logging.getLogger(__name__)

MIN_OUTPUT_TOKENS = settings.NEMO_MIN_OUTPUT_TOKENS

# A request the client gave up on; the nginx convention, since HTTP has no status for it.
CLIENT_CLOSED = 499


@dataclass(slots=True)
class Call:
    """Everything the log row and the response headers need, filled in as the call goes."""

    request_id: str
    started: float
    run_id: str
    endpoint: str
    snapshot: KeySnapshot | None = None
    request: ChatRequest | None = None
    model: str = ""
    # What holds the call's run in (its envelope, steps, loop guard), if anything does.
    run_limits: RunLimits | None = None
    # The call's claim of its Idempotency-Key, if it came with one: kept with its answer or dropped.
    idempotency: Claim | None = None
    # What the call holds in the budgets until ``record`` settles it, and the prompt tokens it
    # was reserved for at most (``_prompt_bound``).
    reservation: Reservation | None = None
    prompt_bound: int = 0
    attempts: list[Attempt] = field(default_factory=list)
    deployment: str = ""
    provider: str = ""
    cache_status: str = "skip"
    status: int = 200
    error: str = ""
    # The error's type, code and param, as its body says them: what the metrics count refusals
    # by and budget alerts read off the log.
    error_type: str = ""
    error_code: str = ""
    error_param: str = ""
    cost_micros: int = 0
    # What the call's real cost came to above what it reserved (an upstream that ignored the
    # output cap): charged all the same, and shown on its row.
    overshoot_micros: int = 0
    summary: CallSummary = field(default_factory=CallSummary)
    response: dict | None = None
    recorded: bool = False
    # Wall clock: the budget period the call is reserved in, and the row's date in the ledger.
    arrived: float = field(default_factory=time.time)

    def answered_with(self, error: GatewayError, *, logged_as: str | None = None) -> None:
        """The contract's error the call ends with, as its row keeps it: the status, the words
        (``logged_as`` where the row says them otherwise) and the type, code and param."""
        self.status, self.error = error.status, logged_as or error.message
        self.error_type, self.error_code, self.error_param = error.type, error.code or "", error.param or ""

    def headers(self) -> dict[str, str]:
        headers = {"x-nemo-request-id": self.request_id, "x-nemo-cache": self.cache_status}
        if self.deployment:
            headers["x-nemo-deployment"] = self.deployment
        if self.attempts:
            headers["x-nemo-attempts"] = attempts_header(self.attempts)
        if self.reservation is not None:
            headers.update(self.reservation.rate_headers)
            cap = self.request.max_tokens or self.reservation.output_tokens
            if cap:
                headers["x-nemo-max-tokens"] = str(cap)
        return headers


def new_request_id() -> str:
    """``req_`` and 32 hex digits: the millisecond it was made (48 bits), then 80 random bits. Ids
    made later sort after, so the log's unique index on them grows at its end instead of splitting
    pages at random; time.time() is read without a system call, as the random bits are made. (The
    hex of their bytes: half the time of formatting the two numbers.)"""
    return "req_" + (int(time.time() * 1000).to_bytes(6) + random.getrandbits(80).to_bytes(10)).hex()


async def serve(state: GatewayState, dialect: Dialect, scope, receive, send) -> None:
    """One call of the proxy, from its request to its answer and its row."""
    call = Call(request_id=new_request_id(), started=time.monotonic(),
                run_id=(header(scope, b"x-nemo-run") or "")[:200], endpoint=dialect.endpoint)
    try:
        await _run(state, dialect, call, scope, receive, send)
    except GatewayError as error:
        await _refuse(state, dialect, call, error, send)
    except asyncio.CancelledError:
        # The worker stopped before the call was done (its drain's grace period ran out): the
        # row says so, whatever the client was sent already.
        if call.status == 200:
            call.status, call.error = 503, "the gateway stopped before the call was done"
        raise
    except Exception:
        # A bug of ours, or Redis/the database gone: the client still gets an answer in the
        # contract's shape, and the call still leaves its trail and ends its reservation.
        logger.exception("request %s failed inside the gateway", call.request_id)
        failure = internal_error(call.request_id)
        call.answered_with(failure, logged_as="internal error")
        if call.snapshot is not None and not call.recorded:
            await _record_or_log(state, call)
        try:
            await dialect.refuse(send, failure, call.headers())
        except Exception:  # noqa: BLE001 - the client is gone, or its answer had begun
            pass
    finally:
        # Whatever else ended the call (a client that left, a cancellation).
        if call.snapshot is not None and not call.recorded:
            await record(state, call)
        if call.idempotency is not None:
            await _drop_claim(state, call.idempotency)
        metrics.observe_call(call, state.config.models)
        events.call_ended(call, scope)


async def _run(state: GatewayState, dialect: Dialect, call: Call, scope, receive, send) -> None:
    try:
        call.snapshot = await authenticate(state, scope, dialect)
    except UnusableKey as refused:
        # Its holder's call: refused, and logged against the key it named.
        call.snapshot = refused.snapshot
        raise
    call.run_limits = run_limits(call.snapshot, call.run_id, header(scope, b"x-nemo-run-budget"))
    raw = await _read(call, receive)
    if raw is None:
        return
    request = call.request = dialect.parse(raw, scope)
    call.model = request.model
    idempotency_key = header(scope, b"idempotency-key")
    if idempotency_key is not None:
        claim = await claim_or_answer(state.store, key_id=call.snapshot.id, idempotency_key=idempotency_key,
                                      endpoint=call.endpoint, body=raw)
        if isinstance(claim, KeptAnswer):
            await _replay(state, call, claim, send)
            return
        call.idempotency = claim
        send = AnswerCapture(send, claim, state.store, succeeded=lambda: call.status == 200)
    # A dialect's step of its own once the key is known (the Responses API's stored conversation).
    prepare = getattr(dialect, "prepare", None)
    if prepare is not None:
        await prepare(state, call)
    route, links = choose_links(state, call)
    if not state.recorder.available:
        # Nothing is served that could not be recorded.
        raise _database_unavailable()
    if not request.charged:
        # (A token count: no limit, no reservation, no cache; logged all the same.)
        await _answer(state, dialect, call, await _count(state, call, route, links), send, cache_key=None)
        return
    cache_key = None
    if cache.cache_wanted(request_choice=request.use_cache, org_default=call.snapshot.org_cache_enabled):
        cache_key = cache.cache_key(org_id=call.snapshot.org_id, body=request.body)
        call.cache_status = "miss"
        cached = await cache.cache_get(state.store, cache_key)
        if cached is not None:
            cached = cache.native_answer(cached, getattr(request, "native", None))
            await _answer_from_cache(state, dialect, call, cached, send)
            return
    links = await order_links(state.store, route, links)
    await admit(state, call, route, links)
    # A call that names no output limit is sent one: the output its reservation pays for.
    output_cap = None if request.max_tokens else call.reservation.output_tokens
    served = await route_and_call(state, call, route, links, output_cap=output_cap)
    if request.stream:
        await _relay(state, dialect, call, served, receive, send)
        if cache_key is not None and call.status == 200:
            await cache.cache_put(state.store, cache_key, call.response, getattr(request, "native", None))
    else:
        await _answer(state, dialect, call, served, send, cache_key=cache_key)


async def authenticate(state: GatewayState, scope, dialect: Dialect | None = None) -> KeySnapshot:
    """The calling key, from where the client API sends it (a dialect's ``authorization``;
    ``Authorization: Bearer`` else)."""
    where = getattr(dialect, "authorization", None)
    try:
        return await state.keys.authenticate(header(scope, b"authorization") if where is None else where(scope))
    except DATABASE_ERRORS as error:
        raise _database_unavailable() from error


async def _read(call: Call, receive) -> bytes | None:
    """The request's body; None if the client left before it was all sent."""
    try:
        return await read_body(receive)
    except ConnectionResetError as gone:
        call.status, call.error = CLIENT_CLOSED, str(gone)
        return None


def choose_links(state: GatewayState, call: Call) -> tuple[ModelRoute, list[Deployment]]:
    """The model's route and the links of its chain that can serve this request."""
    route = state.config.models.get(call.model)
    if route is None:
        raise model_not_found(call.model)
    if not call.snapshot.may_use(call.model):
        raise model_not_allowed(call.model)
    return route, eligible_links(route, tags=call.request.tags, needs_tools=call.request.has_tools,
                                 embeds=call.request.method == "embed")


async def admit(state: GatewayState, call: Call, route: ModelRoute, links: list[Deployment]) -> None:
    """The key's rate limits and the call's worst case reserved in every budget, or the call is
    refused before anything is sent. A call that names its output limit reserves it; one that
    names none reserves, and is sent, as much output as its tightest budget can still pay for, up
    to the model's maximum and the key's default (a 402 only if not even ``NEMO_MIN_OUTPUT_TOKENS``
    fit). In the same round trip to the counters, the links' circuits and cooldowns are read
    (``Reservation.chain``, which the router follows): a refused call takes no circuit's probe."""
    request = call.request
    chain = [link.id for link in links]
    call.prompt_bound = _prompt_bound(request.prompt_bytes, links)
    fit_output = None
    # An answer without output (an embedding) reserves only its prompt.
    if not request.max_tokens and request.has_output:
        most = min(route.max_output_tokens, call.snapshot.default_max_tokens)
        fit_output = (min(MIN_OUTPUT_TOKENS, most), most)
    try:
        call.reservation = await state.admissions.reserve(
            reservation_id=call.request_id,
            snapshot=call.snapshot,
            prices=[link.price for link in links],
            prompt_bytes=call.prompt_bound,
            output_tokens=(request.max_tokens or 0) * request.n,
            fit_output=fit_output,
            choices=request.n,
            now=call.arrived,
            chain=chain,
            trail={"endpoint": call.endpoint, "model": call.model, "run_id": call.run_id,
                   "stream": request.stream, "deployments": chain},
            run=call.run_limits,
        )
    except Refused as refused:
        raise refusal_error(refused) from refused


def _prompt_bound(prompt_bytes: int, links: list[Deployment]) -> int:
    """The prompt's worst case in tokens: its bytes (and linked media), but never more than the
    largest context window of the links, which no prompt they take can pass."""
    windows = [link.context_window for link in links]
    if None in windows:
        return prompt_bytes
    return min(prompt_bytes, max(windows))


async def route_and_call(state: GatewayState, call: Call, route: ModelRoute, links: list[Deployment], *,
                         output_cap: int | None, chain: ChainCheck | None = None) -> Served:
    """``chain``: the links' check, if not the reservation's."""
    try:
        served = await call_chain(store=state.store, session=state.session, route=route, links=links,
                                  chain=call.reservation.chain if chain is None else chain, body=call.request.body,
                                  method=call.request.method, output_cap=output_cap,
                                  native=getattr(call.request, "native", None))
    except ChainFailed as failure:
        call.attempts = failure.attempts
        raise
    state.busy_poll.poke()
    call.attempts = served.attempts
    call.deployment = served.deployment.id
    call.provider = served.deployment.provider_name
    return served


async def _count(state: GatewayState, call: Call, route: ModelRoute, links: list[Deployment]) -> Served:
    """A token count, along the chain as any call goes (a link whose circuit is open or that
    cools down skipped, none probed): the first link that counts, or the estimate when none
    can (every link skipped or failing). An upstream that refuses the request refuses it."""
    try:
        return await route_and_call(state, call, route, links, output_cap=None,
                                    chain=await unprobed_chain(state.store, links))
    except ChainFailed as failure:
        if failure.status not in (429, 502):
            raise
        return Served(deployment=None, attempts=failure.attempts, completion=estimated_count(call.request.body))


async def _answer(state: GatewayState, dialect: Dialect, call: Call, served: Served, send, *,
                  cache_key: str | None) -> None:
    call.summary.take_completion(served.completion)
    call.summary.first_token_at = time.monotonic()
    _charge(call, served)
    # (An embedding's vectors are not logged: the row says how many there were, and their size.)
    call.response = call.request.logged_answer(served.completion)
    await record(state, call)
    if cache_key is not None:
        # Before the answer: the client's next call may ask for the same.
        await cache.cache_put(state.store, cache_key, served.completion, getattr(call.request, "native", None))
    headers = {**call.headers(), "x-nemo-cost": str(from_micros(call.cost_micros))}
    await dialect.answer(send, call.request, served.completion, headers)


async def _relay(state: GatewayState, dialect: Dialect, call: Call, served: Served, receive, send) -> None:
    relay = StreamRelay(dialect, call.request, served.chunks, call.summary, receive, send, headers=call.headers())
    broken = await relay.relay()
    failure = None
    if relay.client_left:
        call.status, call.error = CLIENT_CLOSED, "the client disconnected mid-stream"
    elif broken is not None:
        call.attempts[-1].outcome = "broken_stream"
        failure = GatewayError(502, f"the upstream stream broke: {broken.message}", type="upstream_error",
                               code="upstream_error")
        call.answered_with(failure)
    # Tokens the client did not wait for were still generated; charge a fair estimate of them.
    call.summary.estimate_usage(prompt_tokens=call.prompt_bound // 4)
    _charge(call, served)
    call.response = call.summary.as_completion()
    await record(state, call)
    await relay.finish(failure)


async def _drop_claim(state: GatewayState, claim: Claim) -> None:
    """An Idempotency-Key whose call did not succeed is given up, so a retry runs."""
    try:
        await claim.drop(state.store)
    except Exception:  # noqa: BLE001 - the claim then expires by itself (idempotency.PENDING_S)
        logger.warning("an Idempotency-Key's claim could not be given up", exc_info=True)


async def _answer_from_cache(state: GatewayState, dialect: Dialect, call: Call, completion: dict, send) -> None:
    """A hit costs nothing and reserves nothing; it is recorded like any call before it is sent."""
    call.cache_status = "hit"
    call.summary.take_completion(completion)
    call.summary.first_token_at = time.monotonic()
    call.response = completion
    await record(state, call)
    await replay(dialect, call.request, completion, send, {**call.headers(), "x-nemo-cost": "0.000000"})


async def _replay(state: GatewayState, call: Call, kept: KeptAnswer, send) -> None:
    """The first answer of the call's Idempotency-Key, sent again: it costs nothing and reserves
    nothing, and is recorded (its own row, at no cost) before it is sent."""
    await record(state, call)
    await kept.replay(send, {**call.headers(), "x-nemo-cost": "0.000000", REPLAY_HEADER: "true"})


async def _refuse(state: GatewayState, dialect: Dialect, call: Call, error: GatewayError, send) -> None:
    """A call the gateway answers with an error of the contract: recorded, then answered."""
    call.answered_with(error)
    headers = {**call.headers(), **error.headers}
    if call.snapshot is not None:
        if call.reservation is None and not state.recorder.available:
            # Refused before any upstream while the database is away: the row waits for it,
            # the client does not.
            call.recorded = True
            state.recorder.submit(log_row(call))
        elif not await _record_or_log(state, call):
            # Its row could not be written: the call did not complete (DESIGN.md).
            error, headers = internal_error(call.request_id), call.headers()
    await dialect.refuse(send, error, headers)


def _database_unavailable() -> GatewayError:
    return service_unavailable("The request log's database cannot be reached; nothing was sent upstream.",
                               code="database_unavailable")


def _charge(call: Call, served: Served) -> None:
    """The call's real cost, and what of it its reservation did not cover: the output cap is
    always sent, so only an upstream that ignored it can go over, and then the whole real cost
    is still charged (the budget's next calls are refused until it is back in bounds)."""
    if call.reservation is None:
        # Not charged (a token count).
        return
    price, summary = served.deployment.price, call.summary
    call.cost_micros = call_cost_micros(
        prompt_tokens=summary.prompt_tokens,
        cached_tokens=summary.cached_tokens,
        completion_tokens=summary.completion_tokens,
        input_price=price.input,
        cached_input_price=price.cached_input,
        output_price=price.output,
        cache_write_tokens=summary.cache_write_tokens,
        cache_write_price=price.cache_write,
    )
    reserved = call.reservation.amount_micros
    call.overshoot_micros = max(0, call.cost_micros - reserved)
    if call.overshoot_micros:
        logger.warning("request %s cost %d micro-dollars more than it reserved (%d): %s ignored its output cap",
                       call.request_id, call.overshoot_micros, reserved, call.deployment)


async def record(state: GatewayState, call: Call) -> None:
    """The call's row committed, then its reservation settled at its cost: the recorder does
    both, in that order, and returns once the row is committed (gateway/recorder.py). Raises
    if the row could not be written."""
    call.recorded = True
    settlement = None
    if call.reservation is not None:
        tokens = call.summary.prompt_tokens + call.summary.completion_tokens
        settlement = Settlement(call.reservation, call.cost_micros, tokens)
    await state.recorder.record(log_row(call), settlement)
    run_bucket = call.reservation.run_bucket if call.reservation is not None else None
    if run_bucket is not None and call.run_limits.loop_limit and call.summary.tool_calls:
        # Before the answer: the run's next call is weighed against it.
        await count_tool_calls(state.store, run_bucket, call.summary.tool_call_list())


async def _record_or_log(state: GatewayState, call: Call) -> bool:
    """``record``, for a call already failing: False (and the failure logged) if its row could
    not be written."""
    try:
        await record(state, call)
    except Exception:
        logger.exception("request %s could not be logged", call.request_id)
        return False
    return True


def log_row(call: Call) -> dict:
    """The request-log row, as the recorder inserts it (columns by attribute name)."""
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
        endpoint=call.endpoint,
        model=call.model,
        deployment=call.deployment,
        provider=call.provider,
        status=call.status,
        error=call.error,
        error_type=call.error_type,
        error_code=call.error_code,
        error_param=call.error_param,
        run_budget=None if call.run_limits is None or call.run_limits.envelope is None
        else from_micros(call.run_limits.envelope),
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
        tags=call_tags(request.tags, request.metadata) if request else None,
        tools_offered=[t["function"]["name"] for t in (request.body.get("tools") or [])] if request else [],
        prompt_meta=prompt_meta(request.messages) if request else {},
        cache=call.cache_status,
        request_body=request.body if store_bodies else None,
        response_body=call.response if store_bodies else None,
    )
