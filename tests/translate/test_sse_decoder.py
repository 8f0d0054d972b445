"""The incremental SSE decoder, fed the byte chunks a socket may deliver."""

from __future__ import annotations

import pytest

from messagegate.translate.sse_decoder import ServerSentEvent, SSEDecoder

STREAM = (
    b'event: message_start\ndata: {"a": 1}\n\n'
    b": a comment\n\n"
    b"data: first line\ndata: second line\n\n"
    b"event: ping\r\ndata: {}\r\n\r\n"
    b"data:no-space\n\n"
    b'event: text\ndata: {"t": "caf\xc3\xa9 \xe2\x9c\x93"}\n\n'
)
EXPECTED = [
    ServerSentEvent("message_start", '{"a": 1}'),
    ServerSentEvent("message", "first line\nsecond line"),
    ServerSentEvent("ping", "{}"),
    ServerSentEvent("message", "no-space"),
    ServerSentEvent("text", '{"t": "café ✓"}'),
]


def decode_in_pieces(size: int) -> list[ServerSentEvent]:
    decoder = SSEDecoder()
    events: list[ServerSentEvent] = []
    for start in range(0, len(STREAM), size):
        events.extend(decoder.feed(STREAM[start : start + size]))
    return events + decoder.finish()


@pytest.mark.parametrize("size", [1, 2, 3, 7, 64, len(STREAM)])
def test_any_chunking_gives_the_same_events(size: int) -> None:
    assert decode_in_pieces(size) == EXPECTED


def test_an_event_is_only_complete_at_its_blank_line() -> None:
    decoder = SSEDecoder()
    assert decoder.feed(b"event: x\ndata: 1\n") == []
    assert decoder.feed(b"\n") == [ServerSentEvent("x", "1")]


def test_the_last_event_without_a_blank_line_still_counts_at_the_end() -> None:
    decoder = SSEDecoder()
    assert decoder.feed(b"data: [DONE]") == []
    assert decoder.finish() == [ServerSentEvent("message", "[DONE]")]
    assert decoder.finish() == []


def test_an_event_name_without_data_is_not_an_event() -> None:
    decoder = SSEDecoder()
    assert decoder.feed(b"event: lonely\n\ndata: x\n\n") == [ServerSentEvent("message", "x")]
