"""The stream events the Responses and Messages renderers write from fixed bytes (for speed) are
exactly what their general encoder makes of the same payloads: a change to an item's, a part's or
a message's shape that the fixed bytes did not follow fails here, not in a client."""

import orjson
import pytest

from gateway.dialects import messages, responses
from gateway.dialects.messages import Messages
from gateway.dialects.responses import Responses, ResponsesStream, _delta_event, _text_part, message_item

TEXT = 'a "quoted" line\nwith é and 🦊'


@pytest.fixture
def responses_stream() -> ResponsesStream:
    body = orjson.dumps({"model": "gpt-4o-mini", "input": "hi", "stream": True})
    return ResponsesStream(Responses().parse(body, {"headers": []}))


def test_a_message_items_opening_events_are_the_encoders(responses_stream):
    item = message_item("msg_1", [], "in_progress")
    general = (responses_stream._event("response.output_item.added", {"item": {**item, "content": []},
                                                                       "output_index": 2})
               + responses_stream._event("response.content_part.added", {
                   "content_index": 0, "item_id": "msg_1", "output_index": 2, "part": _text_part("")}))

    assert responses._TEXT_OPENED % (b"msg_1", 2, 0, b"msg_1", 2, 1) == general


def test_a_message_items_closing_events_are_the_encoders(responses_stream):
    part = _text_part(TEXT)
    item = message_item("msg_1", [part], "completed")
    general = (responses_stream._event("response.output_text.done", {
        "content_index": 0, "item_id": "msg_1", "logprobs": [], "output_index": 2, "text": TEXT})
        + responses_stream._event("response.content_part.done", {
            "content_index": 0, "item_id": "msg_1", "output_index": 2, "part": part})
        + responses_stream._event("response.output_item.done", {"item": item, "output_index": 2}))
    text = orjson.dumps(TEXT)

    assert responses._TEXT_CLOSED % (b"msg_1", 2, text, 0, b"msg_1", 2, text, 1, b"msg_1", text, 2, 2) == general


def test_a_streams_opening_events_are_the_encoders(responses_stream):
    fixed = b"".join(responses_stream._start())
    general = ResponsesStream(responses_stream.request)
    response = responses_stream.response

    assert fixed == (general._event("response.created", {"response": response})
                     + general._event("response.in_progress", {"response": response}))
    assert responses_stream.sequence == general.sequence


@pytest.mark.parametrize("status", ["completed", "incomplete", "failed"])
def test_a_streams_closing_event_is_the_encoders(responses_stream, status):
    responses_stream._start()
    response = {**responses_stream.response, "status": status, "output": [message_item("msg_1", [], "completed")]}
    general = ResponsesStream(responses_stream.request)
    general.sequence = responses_stream.sequence = 7
    fixed: list[bytes] = []
    responses_stream._last_event(response, fixed)

    assert b"".join(fixed) == general._event(f"response.{status}", {"response": response})
    assert responses_stream.sequence == general.sequence


def test_a_text_delta_is_the_encoders(responses_stream):
    event = _delta_event("response.output_text.delta", b'"content_index":0,',
                         b',"item_id":"msg_1","logprobs":[],"output_index":2')

    assert event % (orjson.dumps(TEXT), 0) == responses_stream._event("response.output_text.delta", {
        "content_index": 0, "delta": TEXT, "item_id": "msg_1", "logprobs": [], "output_index": 2})


def test_a_message_items_text_delta_is_the_encoders(responses_stream):
    assert responses._TEXT_DELTA % (b"msg_1", 2) == _delta_event(
        "response.output_text.delta", b'"content_index":0,', b',"item_id":"msg_1","logprobs":[],"output_index":2')


def test_a_function_calls_arguments_delta_is_the_encoders(responses_stream):
    event = _delta_event("response.function_call_arguments.delta", b"", b',"item_id":"fc_1","output_index":3')

    assert event % (orjson.dumps(TEXT), 0) == responses_stream._event("response.function_call_arguments.delta", {
        "delta": TEXT, "item_id": "fc_1", "output_index": 3})


def test_the_messages_streams_fixed_events_are_the_encoders():
    body = orjson.dumps({"model": "claude-sonnet-4", "max_tokens": 64, "stream": True,
                         "messages": [{"role": "user", "content": "hi"}]})
    request = Messages().parse(body, {"headers": []})
    request.message_id = "msg_1"
    start = messages._message(request, content=[], stop=None, model="gpt-4o-mini",
                              usage=messages.message_usage(prompt=0, cached=0, written=0, output=0))
    usage = messages.message_usage(prompt=12, cached=3, written=5, output=4)

    assert messages._MESSAGE_START % (b'"gpt-4o-mini"', b'"msg_1"') == messages._event("message_start",
                                                                                      {"message": start})
    assert messages._TEXT_BLOCK_START % 1 == messages._event("content_block_start", {
        "index": 1, "content_block": messages._TEXT_BLOCK})
    assert messages._TEXT_DELTA % (1, orjson.dumps(TEXT)) == messages._event("content_block_delta", {
        "index": 1, "delta": {"type": "text_delta", "text": TEXT}})
    assert messages._BLOCK_STOP % 1 == messages._event("content_block_stop", {"index": 1})
    assert messages._MESSAGE_DELTA % (b'"max_tokens"', usage["input_tokens"], usage["cache_creation_input_tokens"],
                                      usage["cache_read_input_tokens"], usage["output_tokens"]) == messages._event(
        "message_delta", {"delta": {"stop_reason": "max_tokens", "stop_sequence": None}, "usage": usage})
