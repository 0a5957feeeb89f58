"""``POST /v1/responses``: OpenAI's Responses API, the default of the OpenAI Agents SDK, Codex and
``@ai-sdk/openai``.

Its requests become the internal Chat Completions call (gateway/dialects/responses_request.py);
its answers are Response objects built from the chat completion, and its streams OpenAI's event
sequence (``response.created`` … ``response.completed``, each with its ``sequence_number``), as
the recordings in ``shared/recordings/openai-responses-gpt-5/`` show them. A stream that breaks
midway ends in ``response.failed``, the Responses API's own end of a failed response. Responses
are stored for their org unless the request says ``store: false`` (gateway/responses_store.py).
"""

from __future__ import annotations

import random
import time

import orjson

from gateway import responses_store
from gateway.dialects.chat_completions import completion_as_chunks
from gateway.dialects.responses_request import ResponsesRequest, continued, parse_responses_request, response_echo
from gateway.errors import GatewayError
from gateway.http import header, send_json
from gateway.providers.base import Event
from gateway.summary import CallSummary

# finish_reason of a chat completion -> (status, incomplete_details) of a Response.
_INCOMPLETE = {"length": {"reason": "max_output_tokens"}, "content_filter": {"reason": "content_filter"}}


def new_id(prefix: str) -> str:
    """An item's id, unique but no secret (a Response's own is its call's request id, see
    ``prepare``): no system call per id, as ``secrets`` makes (and its 48 hex digits as bytes, a
    third of what formatting the number takes)."""
    return prefix + random.getrandbits(192).to_bytes(24).hex()


def _remember(request: ResponsesRequest, response: dict) -> None:
    # (None when ``prepare`` never ran: the stream renderer tested on its own.)
    if request.stored_responses is not None:
        request.stored_responses.remember(request, response)


class Responses:
    endpoint = "responses"

    def parse(self, raw: bytes, scope) -> ResponsesRequest:
        return parse_responses_request(raw, tags_header=header(scope, b"x-nemo-tags"))

    async def prepare(self, state, call) -> None:
        """Once the key is known: the response's id (the call's, so the log row and the response
        name each other), its org, and the stored conversation it continues."""
        request: ResponsesRequest = call.request
        request.response_id = "resp_" + call.request_id.removeprefix("req_")
        request.org_id = call.snapshot.org_id
        request.stored_responses = state.stored_responses
        if request.previous_response_id:
            history = await responses_store.conversation(state.stored_responses, request.org_id,
                                                         request.previous_response_id)
            continued(request, history)

    async def answer(self, send, request: ResponsesRequest, completion: dict, headers: dict[str, str]) -> None:
        response = response_from_completion(request, completion)
        _remember(request, response)
        await send_json(send, 200, response, headers)

    def stream(self, request: ResponsesRequest) -> ResponsesStream:
        return ResponsesStream(request)

    def replay(self, request: ResponsesRequest, completion: dict) -> bytes:
        render = self.stream(request)
        summary = CallSummary()
        summary.take_completion(completion)
        return render.events([(chunk, None) for chunk in completion_as_chunks(completion)]) + render.end(summary)

    async def refuse(self, send, error: GatewayError, headers: dict[str, str]) -> None:
        await send_json(send, error.status, error.body(), headers)


# --- the Response object ---------------------------------------------------------------------------

def response_usage(*, prompt: int, completion: int, cached: int, reasoning: int = 0) -> dict:
    return {"input_tokens": prompt, "input_tokens_details": {"cached_tokens": cached}, "output_tokens": completion,
            "output_tokens_details": {"reasoning_tokens": reasoning}, "total_tokens": prompt + completion}


def _usage_of(usage: dict | None) -> dict:
    usage = usage or {}
    return response_usage(
        prompt=int(usage.get("prompt_tokens") or 0),
        completion=int(usage.get("completion_tokens") or 0),
        cached=int((usage.get("prompt_tokens_details") or {}).get("cached_tokens") or 0),
        reasoning=int((usage.get("completion_tokens_details") or {}).get("reasoning_tokens") or 0),
    )


def response_object(request: ResponsesRequest, *, status: str, output: list, usage: dict | None, model: str,
                    created_at: int, error: dict | None = None, finish_reason: str = "") -> dict:
    # (A request with no body, its renderer tested alone, echoes every field's default.)
    response = response_echo(request.echoed or {})
    response["id"] = request.response_id or new_id("resp_")
    response["created_at"] = created_at
    response["error"] = error
    response["model"] = model or request.model
    response["output"] = output
    response["usage"] = usage
    _settle(response, status, finish_reason)
    return response


def _settle(response: dict, status: str, finish_reason: str) -> None:
    """A Response's status, when it completed, and why it is incomplete (a completed answer cut
    short by its length or a filter)."""
    incomplete = _INCOMPLETE.get(finish_reason) if status == "completed" else None
    if incomplete is not None:
        status = "incomplete"
    response["status"] = status
    response["completed_at"] = int(time.time()) if status == "completed" else None
    response["incomplete_details"] = incomplete


def _text_part(text: str) -> dict:
    return {"type": "output_text", "annotations": [], "logprobs": [], "text": text}


def message_item(item_id: str, parts: list[dict], status: str) -> dict:
    return {"id": item_id, "type": "message", "status": status, "content": parts, "role": "assistant"}


def function_item(item_id: str, *, call_id: str, name: str, arguments: str, status: str) -> dict:
    return {"id": item_id, "type": "function_call", "status": status, "arguments": arguments, "call_id": call_id,
            "name": name}


def output_of(message: dict) -> list[dict]:
    """A chat completion's message as Response output items."""
    output = []
    parts = []
    if message.get("content"):
        parts.append(_text_part(message["content"]))
    if message.get("refusal"):
        parts.append({"type": "refusal", "refusal": message["refusal"]})
    if parts:
        output.append(message_item(new_id("msg_"), parts, "completed"))
    for call in message.get("tool_calls") or []:
        function = call.get("function") or {}
        output.append(function_item(new_id("fc_"), call_id=call.get("id") or new_id("call_"),
                                    name=function.get("name") or "", arguments=function.get("arguments") or "",
                                    status="completed"))
    return output


def response_from_completion(request: ResponsesRequest, completion: dict) -> dict:
    choices = completion.get("choices") or [{}]
    choice = choices[0]
    return response_object(request, status="completed", output=output_of(choice.get("message") or {}),
                           usage=_usage_of(completion.get("usage")), model=completion.get("model") or "",
                           created_at=completion.get("created") or int(time.time()),
                           finish_reason=choice.get("finish_reason") or "")


# --- the stream ------------------------------------------------------------------------------------

def _delta_event(kind: str, before: bytes, after: bytes) -> bytes:
    """A delta event's bytes around its delta (JSON) and its sequence number (``%s``, ``%d``):
    the event and its ``type``, the fields ``before`` the delta, then the fields ``after`` it
    (keys in the order OpenAI sends them; neither holds a ``%``: ids are the gateway's own)."""
    encoded = kind.encode()
    return (b'event: %s\ndata: {"type":"%s",%s"delta":%%s%s,"sequence_number":%%d}\n\n'
            % (encoded, encoded, before, after))


# The events that carry the whole Response: the two that open every stream (sequence numbers 0
# and 1) around the Response encoded once, and the one that ends it, by its status, before the
# Response and its sequence number.
_RESPONSE_OPENED = (b'event: response.created\ndata: {"type":"response.created","response":',
                    b',"sequence_number":0}\n\nevent: response.in_progress\ndata: {"type":"response.in_progress",'
                    b'"response":', b',"sequence_number":1}\n\n')
_RESPONSE_ENDED = {status: b'event: response.%s\ndata: {"type":"response.%s","response":' % (status.encode(),
                                                                                              status.encode())
                   for status in ("completed", "incomplete", "failed")}
_SEQUENCE_END = b',"sequence_number":%d}\n\n'


# The events that open and close a message item (nearly every stream's one item), from their
# fixed bytes: the ones ``_event`` makes of them, around the item's id, its output index, the
# sequence numbers and the text (JSON).
_TEXT_OPENED = (
    b'event: response.output_item.added\ndata: {"type":"response.output_item.added","item":{"id":"%s",'
    b'"type":"message","status":"in_progress","content":[],"role":"assistant"},"output_index":%d,'
    b'"sequence_number":%d}\n\n'
    b'event: response.content_part.added\ndata: {"type":"response.content_part.added","content_index":0,'
    b'"item_id":"%s","output_index":%d,"part":{"type":"output_text","annotations":[],"logprobs":[],"text":""},'
    b'"sequence_number":%d}\n\n')
# ... and a text delta's event (``_delta_event``'s) around the item's id and output index.
_TEXT_DELTA = (b'event: response.output_text.delta\ndata: {"type":"response.output_text.delta","content_index":0,'
               b'"delta":%%s,"item_id":"%s","logprobs":[],"output_index":%d,"sequence_number":%%d}\n\n')
_TEXT_CLOSED = (
    b'event: response.output_text.done\ndata: {"type":"response.output_text.done","content_index":0,'
    b'"item_id":"%s","logprobs":[],"output_index":%d,"text":%s,"sequence_number":%d}\n\n'
    b'event: response.content_part.done\ndata: {"type":"response.content_part.done","content_index":0,'
    b'"item_id":"%s","output_index":%d,"part":{"type":"output_text","annotations":[],"logprobs":[],"text":%s},'
    b'"sequence_number":%d}\n\n'
    b'event: response.output_item.done\ndata: {"type":"response.output_item.done","item":{"id":"%s",'
    b'"type":"message","status":"completed","content":[{"type":"output_text","annotations":[],"logprobs":[],'
    b'"text":%s}],"role":"assistant"},"output_index":%d,"sequence_number":%d}\n\n')


class ResponsesStream:
    """The chunks of a streamed chat completion as the Responses API's events: an item opened
    (``output_item.added``) when its first piece comes, its deltas, and its ``.done`` events
    once the next item starts or the answer ends."""

    __slots__ = ("request", "sequence", "response", "items", "text", "calls", "open_call", "created_at", "model",
                 "reasoning_tokens")

    def __init__(self, request: ResponsesRequest) -> None:
        self.request = request
        self.sequence = 0
        # The Response of ``response.created``, once sent; its end is the same object updated
        # (the same keys in the same order), not one built again.
        self.response: dict | None = None
        self.items: list[dict] = []
        # The message item being written (its output index, its text pieces, its delta event's
        # bytes: ``_delta_event``), and the function calls by chat index (item, output index,
        # delta event).
        self.text: tuple[dict, int, list[str], bytes] | None = None
        self.calls: dict[int, tuple[dict, int, bytes]] = {}
        self.open_call: int | None = None
        self.created_at = int(time.time())
        self.model = ""
        # The summary keeps no reasoning tokens; the usage chunk has them (Gemini's thoughts, o-series).
        self.reasoning_tokens = 0

    def _event(self, kind: str, payload: dict) -> bytes:
        payload = {"type": kind, **payload, "sequence_number": self.sequence}
        self.sequence += 1
        return b"event: " + kind.encode() + b"\ndata: " + orjson.dumps(payload) + b"\n\n"

    def _delta(self, event: bytes, delta: str) -> bytes:
        """A delta event from its bytes (``_delta_event``): the stream's most frequent event,
        written without building its payload."""
        sequence = self.sequence
        self.sequence = sequence + 1
        return event % (orjson.dumps(delta), sequence)

    def _start(self) -> list[bytes]:
        """``response.created`` and ``response.in_progress``, the Response encoded once for both."""
        self.response = response_object(self.request, status="in_progress", output=[], usage=None, model=self.model,
                                        created_at=self.created_at)
        encoded = orjson.dumps(self.response)
        self.sequence = 2
        created, in_progress, end = _RESPONSE_OPENED
        return [created, encoded, in_progress, encoded, end]

    def _response(self, status: str, *, usage: dict | None, error: dict | None = None,
                  finish_reason: str = "") -> dict:
        """The Response at the stream's end (``_start`` ran)."""
        response = self.response
        response["error"] = error
        response["model"] = self.model or self.request.model
        response["output"] = self.items
        response["usage"] = usage
        _settle(response, status, finish_reason)
        return response

    def _last_event(self, response: dict, out: list[bytes]) -> None:
        """The event that ends the stream with the whole Response, by its status."""
        out += (_RESPONSE_ENDED[response["status"]], orjson.dumps(response), _SEQUENCE_END % self.sequence)
        self.sequence += 1

    def events(self, batch: list[Event]) -> bytes:
        out = None if self.response is None else []
        for chunk, _ in batch:
            if not self.model:
                self.model = chunk.get("model") or ""
            if out is None:
                out = self._start()
            if usage := chunk.get("usage"):
                self.reasoning_tokens = int((usage.get("completion_tokens_details") or {}).get("reasoning_tokens") or 0)
            for choice in chunk.get("choices") or ():
                if choice.get("index", 0) != 0 or not (delta := choice.get("delta")):
                    continue
                if text := delta.get("content"):
                    if self.text is None:
                        self._open_text(out)
                    _, _, pieces, event = self.text
                    pieces.append(text)
                    out.append(self._delta(event, text))
                if calls := delta.get("tool_calls"):
                    for call in calls:
                        self._call_delta(call, out)
        return b"".join(out) if out else b""

    def _open_text(self, out: list[bytes]) -> None:
        # (A call is open only while no text is: see ``_call_delta``.)
        self._close_call(out)
        item = message_item(new_id("msg_"), [], "in_progress")
        self.items.append(item)
        index = len(self.items) - 1
        item_id = item["id"].encode()
        self.text = (item, index, [], _TEXT_DELTA % (item_id, index))
        sequence = self.sequence
        self.sequence += 2
        out.append(_TEXT_OPENED % (item_id, index, sequence, item_id, index, sequence + 1))

    def _call_delta(self, call: dict, out: list[bytes]) -> None:
        index = call.get("index", 0)
        function = call.get("function") or {}
        known = self.calls.get(index)
        if known is None:
            self._close_text(out)
            self._close_call(out)
            item = function_item(new_id("fc_"), call_id=call.get("id") or new_id("call_"),
                                 name=function.get("name") or "", arguments="", status="in_progress")
            self.items.append(item)
            output_index = len(self.items) - 1
            known = self.calls[index] = (item, output_index, _delta_event(
                "response.function_call_arguments.delta", b"",
                b',"item_id":"%s","output_index":%d' % (item["id"].encode(), output_index)))
            self.open_call = index
            out.append(self._event("response.output_item.added", {"item": item, "output_index": output_index}))
        item, _, event = known
        if piece := function.get("arguments"):
            item["arguments"] += piece
            out.append(self._delta(event, piece))

    def _close_text(self, out: list[bytes]) -> None:
        if self.text is None:
            return
        item, index, pieces, _ = self.text
        self.text = None
        text = "".join(pieces)
        part = _text_part(text)
        item["content"] = [part]
        item["status"] = "completed"
        item_id, encoded, sequence = item["id"].encode(), orjson.dumps(text), self.sequence
        self.sequence += 3
        out.append(_TEXT_CLOSED % (item_id, index, encoded, sequence, item_id, index, encoded, sequence + 1,
                                   item_id, encoded, index, sequence + 2))

    def _close_call(self, out: list[bytes]) -> None:
        if self.open_call is None:
            return
        item, index, _ = self.calls[self.open_call]
        self.open_call = None
        item["status"] = "completed"
        out.append(self._event("response.function_call_arguments.done", {
            "arguments": item["arguments"], "item_id": item["id"], "output_index": index}))
        out.append(self._event("response.output_item.done", {"item": item, "output_index": index}))

    def _close(self, out: list[bytes]) -> None:
        self._close_text(out)
        self._close_call(out)

    def end(self, summary: CallSummary) -> bytes:
        out = [] if self.response is not None else self._start()
        self._close(out)
        usage = response_usage(prompt=summary.prompt_tokens, completion=summary.completion_tokens,
                               cached=summary.cached_tokens, reasoning=self.reasoning_tokens)
        response = self._response("completed", usage=usage, finish_reason=summary.finish_reason)
        self._last_event(response, out)
        _remember(self.request, response)
        return b"".join(out)

    def failed(self, error: GatewayError) -> bytes:
        out = [] if self.response is not None else self._start()
        response = self._response("failed", usage=None,
                                  error={"code": "server_error", "message": error.message})
        self._last_event(response, out)
        return b"".join(out)
