"""The client-side SSE framing (api/sse.py) the translators' events go out in."""

from __future__ import annotations

from messagegate.api import sse
from messagegate.api.sse import encode_event, encode_raw_event


def test_events_are_framed_as_one_event_line_and_one_data_line() -> None:
    data = {"type": "content_block_delta", "index": 2, "delta": {"type": "text_delta", "text": "é"}}
    assert encode_event("content_block_delta", data) == (
        b'event: content_block_delta\ndata: {"type":"content_block_delta","index":2,'
        b'"delta":{"type":"text_delta","text":"\xc3\xa9"}}\n\n'
    )
    assert sse.PING == b'event: ping\ndata: {"type":"ping"}\n\n'


def test_relayed_names_are_framed_but_never_remembered() -> None:
    assert (
        encode_raw_event("vendor_event", '{"a": 1}') == b'event: vendor_event\ndata: {"a": 1}\n\n'
    )
    assert encode_event("vendor_event", {}) == b"event: vendor_event\ndata: {}\n\n"
    assert "vendor_event" not in sse._HEADS


def test_relayed_data_of_several_lines_keeps_its_lines() -> None:
    assert (
        encode_raw_event("message_delta", "{\n}") == b"event: message_delta\ndata: {\ndata: }\n\n"
    )
