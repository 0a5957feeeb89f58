"""Stored responses of the Responses API, per org: written once the call is recorded, read back
by ``previous_response_id`` and ``GET /v1/responses/{id}`` (and ``/input_items``), deleted by
``DELETE /v1/responses/{id}``.

Writes are group commits (``StoredResponses``, one per worker, on its ``GatewayState``): the
responses answered while one batch is written gather for the next, and each batch is one
upsert in one worker thread, off the event loop, on one connection (a write per call, each on a
connection of its own, cost the endpoint a fifth of its throughput: bench/RESULTS.md). The answer does
not wait for its write: a response being written is pending until it is, and a read of it in
this process waits for that write first (a client's next turn often comes before the write is
done); a read in another worker that finds nothing looks once more after ``WRITE_GRACE_S``.
Every read and delete is scoped by the key's org: another org's id is a 404, like an unknown one.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Callable
from urllib.parse import parse_qsl

from analytics.ledger import DATABASE_ERRORS
from analytics.models import StoredResponse
from gateway.db import db_read
from gateway.errors import GatewayError, service_unavailable
from gateway.http import send_json

logger = logging.getLogger(__name__)

def not_found(response_id: str) -> GatewayError:
    return GatewayError(404, f"Response with id {response_id!r} not found.", type="invalid_request_error",
                        code="response_not_found", param="response_id")


def _conversation_after(request, response: dict) -> list[dict]:
    """The conversation a later turn continues: what came before, this input, this answer."""
    message: dict = {"role": "assistant", "content": None}
    texts, calls = [], []
    for item in response.get("output") or []:
        if item.get("type") == "message":
            texts += [part.get("text") or "" for part in item.get("content") or [] if part.get("type") == "output_text"]
        elif item.get("type") == "function_call":
            calls.append({"id": item["call_id"], "type": "function",
                          "function": {"name": item["name"], "arguments": item["arguments"]}})
    if texts:
        message["content"] = "".join(texts)
    if calls:
        message["tool_calls"] = calls
    answer = [message] if texts or calls else []
    return [*request.history, *request.conversation, *answer]


def _with_ids(items: list) -> list:
    """Input items as ``input_items`` lists them: each with an id."""
    listed = []
    for item in items:
        if not isinstance(item, dict):
            continue
        item = {"type": "message", **item} if "type" not in item else dict(item)
        if "id" not in item:
            prefix = {"message": "msg_", "function_call": "fc_", "function_call_output": "fco_",
                      "reasoning": "rs_"}.get(item["type"], "item_")
            item["id"] = prefix + secrets.token_hex(24)
        if item["type"] == "message" and isinstance(item.get("content"), str):
            kind = "output_text" if item.get("role") == "assistant" else "input_text"
            item["content"] = [{"type": kind, "text": item["content"]}]
        listed.append(item)
    return listed


# Responses written in one upsert at most.
MAX_BATCH = 128


class StoredResponses:
    """The worker's writes of stored responses, as group commits, and what is still pending."""

    def __init__(self) -> None:
        # (org id, response id) -> the write it waits for; resolved once that write is done.
        self._pending: dict[tuple[int, str], asyncio.Future] = {}
        self._queue: list[tuple[tuple[int, str], dict, asyncio.Future]] = []
        self._writer: asyncio.Task | None = None

    def remember(self, request, response: dict) -> None:
        """Stores a completed response for its org unless the request said ``store: false``."""
        if not request.store or not request.org_id or response.get("status") == "failed":
            return
        key = (request.org_id, response["id"])
        fields = {"response": response, "input_items": _with_ids(request.input_items),
                  "conversation": _conversation_after(request, response)}
        loop = asyncio.get_running_loop()
        written = loop.create_future()
        self._pending[key] = written
        self._queue.append((key, fields, written))
        if self._writer is None or self._writer.done():
            self._writer = loop.create_task(self._write_all())

    async def _write_all(self) -> None:
        while self._queue:
            batch, self._queue = self._queue[:MAX_BATCH], self._queue[MAX_BATCH:]
            try:
                await _upsert({key: fields for key, fields, _ in batch})
            except Exception:
                logger.exception("%d responses could not be stored", len(batch))
            for key, _, written in batch:
                written.set_result(None)
                if self._pending.get(key) is written:
                    del self._pending[key]

    async def settled(self, org_id: int, response_id: str) -> None:
        """Returns once this worker's write of the response, if any, is done."""
        written = self._pending.get((org_id, response_id))
        if written is not None:
            await asyncio.shield(written)

    async def close(self) -> None:
        """Waits for the writes handed over."""
        if self._writer is not None:
            await self._writer


@db_read
def _upsert(responses: dict[tuple[int, str], dict]) -> None:
    StoredResponse.objects.bulk_create(
        [StoredResponse(org_id=org_id, response_id=response_id, **fields)
         for (org_id, response_id), fields in responses.items()],
        update_conflicts=True, unique_fields=["org", "response_id"],
        update_fields=["response", "input_items", "conversation"],
    )


@db_read
def _fetch(org_id: int, response_id: str) -> StoredResponse | None:
    return StoredResponse.objects.filter(org_id=org_id, response_id=response_id).first()


@db_read
def _delete(org_id: int, response_id: str) -> int:
    return StoredResponse.objects.filter(org_id=org_id, response_id=response_id).delete()[0]


# A response another worker answered may still be on its way to the database: one more look
# after this long before a 404.
WRITE_GRACE_S = 0.15


async def _stored(writes: StoredResponses, org_id: int, response_id: str) -> StoredResponse:
    await writes.settled(org_id, response_id)
    try:
        stored = await _fetch(org_id, response_id)
        if stored is None:
            await asyncio.sleep(WRITE_GRACE_S)
            stored = await _fetch(org_id, response_id)
    except DATABASE_ERRORS as lost:
        raise service_unavailable("The gateway's database cannot be reached to read this response.",
                                  code="database_unavailable") from lost
    if stored is None:
        raise not_found(response_id)
    return stored


async def conversation(writes: StoredResponses, org_id: int, response_id: str) -> list[dict]:
    """The conversation that ``previous_response_id`` continues; a 404 if the org has no such response."""
    try:
        return (await _stored(writes, org_id, response_id)).conversation
    except GatewayError as error:
        if error.status == 404:
            error.param = "previous_response_id"
        raise


def _input_items_page(stored: StoredResponse, query: dict[str, str]) -> dict:
    items = list(stored.input_items)
    if query.get("order", "desc") != "asc":
        items.reverse()
    if after := query.get("after"):
        ids = [item.get("id") for item in items]
        items = items[ids.index(after) + 1:] if after in ids else []
    try:
        limit = max(1, min(100, int(query.get("limit", "20"))))
    except ValueError:
        limit = 20
    page = items[:limit]
    return {"object": "list", "data": page, "first_id": page[0]["id"] if page else None,
            "last_id": page[-1]["id"] if page else None, "has_more": len(items) > limit}


async def handle(state, scope, send, *, response_id: str, action: str,
                 authenticate: Callable) -> None:
    """``GET /v1/responses/{id}`` (``action`` "get"), ``GET …/input_items`` ("input_items"),
    ``DELETE /v1/responses/{id}`` ("delete"), for the key's org."""
    try:
        snapshot = await authenticate(state, scope)
        org_id = snapshot.org_id
        if action == "delete":
            await state.stored_responses.settled(org_id, response_id)
            if not await _delete(org_id, response_id):
                raise not_found(response_id)
            await send_json(send, 200, {"id": response_id, "object": "response", "deleted": True})
            return
        stored = await _stored(state.stored_responses, org_id, response_id)
    except GatewayError as error:
        await send_json(send, error.status, error.body(), error.headers)
        return
    except DATABASE_ERRORS:
        error = service_unavailable("The gateway's database cannot be reached.", code="database_unavailable")
        await send_json(send, error.status, error.body(), error.headers)
        return
    if action == "input_items":
        query = dict(parse_qsl(scope.get("query_string", b"").decode("latin-1")))
        await send_json(send, 200, _input_items_page(stored, query))
    else:
        await send_json(send, 200, stored.response)
