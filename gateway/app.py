"""The gateway's own ASGI app: ``/v1/*`` here, everything else to Django."""

from __future__ import annotations

import asyncio
import gc
import logging
import signal
import threading
import time

from django.conf import settings

from analytics.ledger import DATABASE_ERRORS
from gateway import metrics, responses_store
from gateway.db import db_read, ping
from gateway.dialects import messages as anthropic_api
from gateway.dialects.chat_completions import ChatCompletions
from gateway.dialects.embeddings import Embeddings
from gateway.dialects.messages import CountTokens, Messages
from gateway.dialects.responses import Responses
from gateway.errors import GatewayError, model_not_found, service_unavailable
from gateway.http import header, send_json
from gateway.pipeline import authenticate, new_request_id, serve
from gateway.state import GatewayState
from gateway.unknown_routes import UnknownRoutes

logger = logging.getLogger(__name__)

CHAT_COMPLETIONS = ChatCompletions()
EMBEDDINGS = Embeddings()
RESPONSES = Responses()
MESSAGES = Messages()
COUNT_TOKENS = CountTokens()
MODEL_PATH = "/v1/models/"

# How long ``/readyz`` waits for each of the database and the counter store.
READY_TIMEOUT_S = 2.0
READY_PROBE_KEY = "readyz"
# How often a draining worker looks whether its calls in flight are done.
DRAIN_POLL_S = 0.1

# Allocations between two collections of the youngest generation (the default is 700).
GC_THRESHOLD = 10_000


class GatewayApp:
    def __init__(self, fallback=None) -> None:
        self.fallback = fallback
        self._state: GatewayState | None = None
        self._starting: asyncio.Lock | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self.unknown_routes = UnknownRoutes()
        # The calls of /v1/* being served (their tasks); whether this worker drains (SIGTERM).
        self._calls: set[asyncio.Task] = set()
        self.draining = False
        self._drain: asyncio.Task | None = None

    async def state(self) -> GatewayState:
        if self._state is None:
            if self._starting is None:
                self._starting = asyncio.Lock()
            async with self._starting:
                if self._state is None:
                    self._state = await GatewayState.start()
                    self.loop = asyncio.get_running_loop()
        return self._state

    async def close(self) -> None:
        if self._state is not None:
            await self._state.close()
            self._state = None

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
        elif scope["type"] == "http" and scope["path"].startswith("/v1/"):
            call = asyncio.current_task()
            self._calls.add(call)
            try:
                await self._route(scope, receive, send)
            finally:
                self._calls.discard(call)
        elif scope["type"] == "http" and scope["path"] == "/healthz":
            await send_json(send, 200, {"status": "ok"})
        elif scope["type"] == "http" and scope["path"] == "/readyz":
            await self._ready(send)
        elif scope["type"] == "http" and scope["path"] == "/metrics":
            await self._metrics(scope, send)
        elif self.fallback is not None:
            await self.fallback(scope, receive, send)
        else:
            await send_json(send, 404, {"error": {"message": "Not found.", "type": "not_found_error",
                                                  "param": None, "code": "unknown_url"}})

    async def _lifespan(self, receive, send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    await self.state()
                except Exception as exc:  # noqa: BLE001 - report a bad config and refuse to start
                    logger.exception("the gateway could not start")
                    await send({"type": "lifespan.startup.failed", "message": str(exc)})
                    return
                # Django, the config and the caches are loaded: keep the collector off them. With
                # dozens of calls in flight, the default threshold (700 objects) had the collector
                # walk the live ones over and over: ~5% of a loaded worker. Most of what a call
                # allocates is freed by reference counting anyway.
                gc.freeze()
                gc.set_threshold(GC_THRESHOLD, 10, 10)
                self._drain_on_sigterm()
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.close()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _metrics(self, scope, send) -> None:
        try:
            state = await self.state()
        except Exception as error:  # noqa: BLE001 - not started (a bad routing file, a database away)
            await send_json(send, 503, service_unavailable(f"The gateway has not started: {type(error).__name__}.",
                                                           code="not_started").body())
            return
        await metrics.handle(state, scope, send)

    def _drain_on_sigterm(self) -> None:
        """SIGTERM drains this worker before the server stops (``drain``). The server's own
        handler (uvicorn's, which closes the listener and stops) is called once drained. Signals
        reach the main thread only: a gateway served from another thread (tests) is not hooked."""
        if threading.current_thread() is not threading.main_thread():
            return
        server_handler = signal.getsignal(signal.SIGTERM)
        loop = asyncio.get_running_loop()

        def stop(signum, frame) -> None:
            if callable(server_handler):
                server_handler(signum, frame)
            else:
                signal.signal(signal.SIGTERM, server_handler)
                signal.raise_signal(signal.SIGTERM)

        def start_drain(signum, frame) -> None:
            if self._drain is None:
                self._drain = loop.create_task(self.drain(lambda: stop(signum, frame)))

        # (A handler runs between two steps of the loop's thread: the drain starts on the loop.)
        signal.signal(signal.SIGTERM, lambda signum, frame: loop.call_soon_threadsafe(start_drain, signum, frame))

    async def drain(self, then) -> None:
        """Lets the calls in flight finish while ``/readyz`` answers 503 (so a load balancer takes
        this worker out) and new calls are still served, up to ``NEMO_DRAIN_GRACE_S``; the calls
        still running then are cancelled (each still logged and settled, ``pipeline.serve``).
        Then ``then()``: the server stops."""
        self.draining = True
        grace_s = settings.NEMO_DRAIN_GRACE_S
        logger.info("SIGTERM: draining %d calls in flight (up to %.0f s)", len(self._calls), grace_s)
        give_up = time.monotonic() + grace_s
        while self._calls and time.monotonic() < give_up:
            await asyncio.sleep(DRAIN_POLL_S)
        if self._calls:
            logger.warning("the drain's grace period ended: cancelling %d calls in flight", len(self._calls))
            for call in list(self._calls):
                call.cancel()
        then()

    async def _ready(self, send) -> None:
        """``/readyz``: the routing file loaded, the database and the counter store answering,
        each within ``READY_TIMEOUT_S``; a 503 naming what is not, for a load balancer. While
        the worker drains (SIGTERM), a 503 whatever the checks say."""
        if self.draining:
            await send_json(send, 503, {"status": "draining"})
            return
        checks = {"routing": "ok", "database": "ok", "counters": "ok"}
        try:
            # (Shielded: a start that takes longer goes on, for the next probe.)
            state = await asyncio.wait_for(asyncio.shield(self.state()), READY_TIMEOUT_S)
        except Exception as error:  # noqa: BLE001 - not started: a bad routing file, a database away
            checks = {"routing": f"failed: {type(error).__name__}", "database": "unknown", "counters": "unknown"}
        else:
            probes = {"database": _database_answers, "counters": lambda: state.store.cache_get(READY_PROBE_KEY)}
            for name, probe in probes.items():
                try:
                    await asyncio.wait_for(probe(), READY_TIMEOUT_S)
                except Exception as error:  # noqa: BLE001 - what is not reachable is reported, not raised
                    checks[name] = f"failed: {type(error).__name__}"
        ready = all(value == "ok" for value in checks.values())
        await send_json(send, 200 if ready else 503, {"status": "ready" if ready else "not ready", "checks": checks})

    async def _route(self, scope, receive, send) -> None:
        state = await self.state()
        state.busy_poll.poke()
        path, method = scope["path"].rstrip("/"), scope["method"]
        if path == "/v1/chat/completions" and method == "POST":
            await serve(state, CHAT_COMPLETIONS, scope, receive, send)
        elif path == "/v1/embeddings" and method == "POST":
            await serve(state, EMBEDDINGS, scope, receive, send)
        elif path == "/v1/responses" and method == "POST":
            await serve(state, RESPONSES, scope, receive, send)
        elif path == "/v1/messages" and method == "POST":
            await serve(state, MESSAGES, scope, receive, send)
        elif path == "/v1/messages/count_tokens" and method == "POST":
            await serve(state, COUNT_TOKENS, scope, receive, send)
        elif path.startswith("/v1/responses/") and (stored := _stored_response_route(path, method)):
            await responses_store.handle(state, scope, send, response_id=stored[0], action=stored[1],
                                         authenticate=authenticate)
        elif path == "/v1/models" and method == "GET":
            await handle_models(state, scope, send)
        elif path.startswith(MODEL_PATH) and method == "GET":
            await handle_model(state, scope, send, path[len(MODEL_PATH):])
        else:
            request_id = new_request_id()
            self.unknown_routes.seen(method=method, path=scope["path"], authorization=header(scope, b"authorization"),
                                     request_id=request_id)
            await send_json(send, 404, {"error": {"message": f"No route {method} {scope['path']}.",
                                                  "type": "not_found_error", "param": None, "code": "unknown_url"}},
                            {"x-nemo-request-id": request_id})


_database_answers = db_read(ping)


def _stored_response_route(path: str, method: str) -> tuple[str, str] | None:
    """``/v1/responses/{id}`` (GET, DELETE) and ``/v1/responses/{id}/input_items`` (GET)."""
    parts = path.split("/")[3:]
    if len(parts) == 1 and parts[0] and method in ("GET", "DELETE"):
        return parts[0], "get" if method == "GET" else "delete"
    if len(parts) == 2 and parts[0] and parts[1] == "input_items" and method == "GET":
        return parts[0], "input_items"
    return None


async def _key(state: GatewayState, scope, send, *, anthropic: bool):
    """The calling key's snapshot; None once its refusal is sent (``anthropic``: from where and
    in the shape of Anthropic's API)."""
    try:
        try:
            where = anthropic_api.authorization(scope) if anthropic else header(scope, b"authorization")
            return await state.keys.authenticate(where)
        except DATABASE_ERRORS as lost:
            raise service_unavailable("The gateway's database cannot be reached to check this key.",
                                      code="database_unavailable") from lost
    except GatewayError as error:
        await _send_error(send, error, anthropic=anthropic)
        return None


async def _send_error(send, error: GatewayError, *, anthropic: bool) -> None:
    await send_json(send, error.status, anthropic_api.error_body(error) if anthropic else error.body(), error.headers)


def _model(name: str, created: int) -> dict:
    return {"id": name, "object": "model", "created": created, "owned_by": "nemo-router"}


async def handle_models(state: GatewayState, scope, send) -> None:
    """The models this key may use, in OpenAI's list shape, or Anthropic's to its clients."""
    anthropic = anthropic_api.is_anthropic_client(scope)
    snapshot = await _key(state, scope, send, anthropic=anthropic)
    if snapshot is None:
        return
    names = [name for name in sorted(state.config.models) if snapshot.may_use(name)]
    if anthropic:
        try:
            page = anthropic_api.model_page(names, time.time(), scope.get("query_string", b""))
        except GatewayError as error:
            await _send_error(send, error, anthropic=True)
            return
        await send_json(send, 200, page)
        return
    created = int(time.time())
    await send_json(send, 200, {"object": "list", "data": [_model(name, created) for name in names]})


async def handle_model(state: GatewayState, scope, send, name: str) -> None:
    """One model in OpenAI's shape. A model the key may not use is as absent as one that does
    not exist: the same 404, so a key cannot learn what other keys are routed to."""
    anthropic = anthropic_api.is_anthropic_client(scope)
    snapshot = await _key(state, scope, send, anthropic=anthropic)
    if snapshot is None:
        return
    if name not in state.config.models or not snapshot.may_use(name):
        await _send_error(send, model_not_found(name), anthropic=anthropic)
        return
    shown = anthropic_api.model_info(name, time.time()) if anthropic else _model(name, int(time.time()))
    await send_json(send, 200, shown)
