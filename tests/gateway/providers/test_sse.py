import random

import pytest

from gateway.providers.sse import SSEEvent, SSEParser


def test_it_splits_events_on_blank_lines() -> None:
    events = SSEParser().feed(b"data: one\n\ndata: two\n\n")

    assert events == [SSEEvent("message", "one"), SSEEvent("message", "two")]


def test_it_splits_events_on_crlf_blank_lines() -> None:
    events = SSEParser().feed(b'data: {"a": 1}\r\n\r\ndata: {"b": 2}\r\n\r\n')

    assert [event.data for event in events] == ['{"a": 1}', '{"b": 2}']


def test_it_reassembles_events_fed_one_byte_at_a_time() -> None:
    parser = SSEParser()
    body = b"event: ping\r\ndata: caf\xc3\xa9\r\n\r\ndata: two\r\n\r\n"

    events = [event for index in range(len(body)) for event in parser.feed(body[index : index + 1])]

    assert events == [SSEEvent("ping", "café"), SSEEvent("message", "two")]


def test_it_keeps_an_event_open_until_its_blank_line_arrives() -> None:
    parser = SSEParser()

    assert parser.feed(b"data: one\r\n\r") == []
    assert parser.feed(b"\n") == [SSEEvent("message", "one")]


def test_it_keeps_the_padding_after_the_data_and_the_event_name() -> None:
    events = SSEParser().feed(b'event: message_stop\ndata: {"type":"message_stop"}          \n\n')

    assert events == [SSEEvent("message_stop", '{"type":"message_stop"}          ')]


def test_it_ignores_comments_and_joins_data_lines() -> None:
    events = SSEParser().feed(b": keep-alive\n\ndata: first\ndata: second\n\n")

    assert events == [SSEEvent("message", "first\nsecond")]


def test_it_returns_the_last_event_when_the_stream_ends_without_a_blank_line() -> None:
    parser = SSEParser()
    parser.feed(b"data: one\n\ndata: last\n")

    assert parser.finish() == [SSEEvent("message", "last")]


def test_it_returns_nothing_at_the_end_of_a_complete_stream() -> None:
    parser = SSEParser()
    parser.feed(b"data: one\r\n\r\n")

    assert parser.finish() == []


def test_a_lone_data_line_reads_as_it_would_among_other_lines() -> None:
    lines = (b"data: one", b"data:one", b"data:  two spaces  ", b"data: caf\xc3\xa9", b"data: bad \xff byte", b"data:")
    for data in lines:
        alone = SSEParser().feed(data + b"\n\n")
        with_a_comment = SSEParser().feed(b": comment\n" + data + b"\n\n")

        assert alone == with_a_comment


def test_it_gives_a_decoder_that_reads_no_event_names_the_data_of_each_event_as_bytes() -> None:
    parser = SSEParser()
    body = b': keep-alive\r\n\r\nevent: ping\r\ndata: first\r\ndata: caf\xc3\xa9\r\n\r\n'
    body += b'data: {"a": 1}\r\n\r\ndata: last'

    assert parser.feed_data(body) == [b"first\ncaf\xc3\xa9", b'{"a": 1}']
    assert parser.finish_data() == [b"last"]


@pytest.mark.parametrize("body", [
    b'data: {"a": 1}\n\ndata: {"b": 2}\n\ndata: [DONE]\n\n',
    b': keep-alive\n\ndata: {"a": 1}\n\n\n\ndata:{"b": 2}\n\n'
    b'event: ping\ndata: first\ndata: second\n\ndata:  padded\n\n',
    b'data: {"a": 1}\n\ndata: {"b"',
])
def test_a_stream_without_crs_gives_the_same_data_read_whole_or_in_any_slices(body: bytes) -> None:
    """Such a stream of one-line ``data: `` events is split in one go; anything else in it (a
    comment, an empty event, another field, ``data:`` without its space) falls back to reading
    each event: the data are the same as the general parser's, however the reads are cut."""
    general = [event.data.encode() for event in SSEParser().feed(body)]
    rng = random.Random(len(body))

    for _ in range(20):
        parser, found, start = SSEParser(), [], 0
        while start < len(body):
            end = start + rng.randint(1, 40)
            found += parser.feed_data(body[start:end])
            start = end
        assert found == general
    assert SSEParser().feed_data(body) == general
