"""The incremental SSE decoder, fed the byte chunks a socket may deliver."""

from __future__ import annotations

import itertools
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

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


# --- property: every chunking of any stream gives the events it was written from -----------

field_text = st.text(st.characters(blacklist_characters="\r\n", blacklist_categories=["Cs"]))


@st.composite
def written_events(draw: st.DrawFn) -> tuple[bytes, ServerSentEvent | None]:
    """One event as a server may write it, and what it decodes to (None: no data, no event)."""
    lines, name = [], ""
    if draw(st.booleans()):
        name = draw(field_text)
        lines.append(f"event: {name}" if name else draw(st.sampled_from(["event", "event:"])))
    data = draw(st.lists(field_text, max_size=3))
    for value in data:
        # ``data:`` drops one leading space, so only a value without one may go without it.
        bare = "data:" + value if not value.startswith(" ") else None
        plain = "data" if not value else None
        forms = [f"data: {value}", *(f for f in (bare, plain) if f is not None)]
        lines.append(draw(st.sampled_from(forms)))
        if draw(st.booleans()):
            lines.insert(draw(st.integers(0, len(lines))), draw(_ignored_lines))
    eols = st.sampled_from(["\n", "\r\n"])
    text = "".join(line + draw(eols) for line in [*lines, ""])
    event = ServerSentEvent(name or "message", "\n".join(data)) if data else None
    return text.encode(), event


_ignored_lines = st.sampled_from([": comment", ":", "id: 7", "retry: 1000", "unknown", "datax: 1"])


@settings(max_examples=300, deadline=None)
@given(st.lists(written_events(), max_size=6), st.data())
def test_any_chunking_of_any_stream(written: list[tuple[bytes, Any]], data: st.DataObject) -> None:
    stream = b"".join(raw for raw, _ in written)
    expected = [event for _, event in written if event is not None]
    whole_events = [raw for raw, _ in written]  # one event per chunk: the usual read
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=8)))
    pieces = [stream[a:b] for a, b in itertools.pairwise([0, *cuts, len(stream)])]
    bytewise = [stream[i : i + 1] for i in range(len(stream))]
    for chunks in (whole_events, pieces, bytewise, [stream]):
        decoder = SSEDecoder()
        events = [event for chunk in chunks for event in decoder.feed(chunk)]
        assert events + decoder.finish() == expected
