"""The Anthropic event relay: which chunks pass byte for byte, and that they equal the relayed."""

from __future__ import annotations

import pytest

from messagegate.translate.anthropic import AnthropicEventConverter
from messagegate.translate.sse_decoder import SSEDecoder

DELTA = (
    b'event: content_block_delta\ndata: {"type":"content_block_delta","index":0,'
    b'"delta":{"type":"text_delta","text":"Hi \\"there\\"\\n"}}\n\n'
)
START = b'event: message_start\ndata: {"type":"message_start","message":{"model":"up"}}\n\n'


@pytest.mark.parametrize(
    "chunk",
    [
        DELTA,
        b'event: content_block_start\ndata: {"type":"content_block_start","index":1}\n\n',
        b'event: content_block_stop\ndata: {"type":"content_block_stop","index":1}\n\n',
        b'event: ping\ndata: {"type": "ping"}\n\n',
    ],
)
def test_a_whole_content_or_ping_event_passes_as_it_came_and_equals_the_relayed_bytes(
    chunk: bytes,
) -> None:
    relay = AnthropicEventConverter("claude-client")
    assert relay.whole_event(chunk) is chunk
    (event,) = SSEDecoder().feed(chunk)
    assert relay.convert(event) == chunk


MESSAGE_DELTA = (
    b'event: message_delta\ndata: {"type":"message_delta","delta":{"stop_reason":"end_turn"},'
    b'"usage":{"output_tokens":3}}\n\n'
)
STOP = b'event: message_stop\ndata: {"type":"message_stop"}\n\n'


@pytest.mark.parametrize(
    "chunk",
    [
        START,  # the model name is rewritten
        MESSAGE_DELTA,  # the usage is recorded
        STOP,
        b'event: brand_new\ndata: {"type":"brand_new"}\n\n',
    ],
)
def test_other_whole_events_are_relayed_as_the_decoded_events_are(chunk: bytes) -> None:
    whole, decoded = (
        AnthropicEventConverter("claude-client"),
        AnthropicEventConverter("claude-client"),
    )
    (event,) = SSEDecoder().feed(chunk)
    assert whole.whole_event(chunk) == decoded.convert(event)
    assert whole.usage == decoded.usage
    if chunk == STOP:
        assert whole.finish() == b""


@pytest.mark.parametrize(
    "event",
    [
        b"event: content_block_delta\ndata: {}\ndata: {}\n\n",  # two data lines
        b'data: {"type":"ping"}\n\n',  # no name
        b": a comment\n\n",
        b"event: ping\nid: 7\n\n",
    ],
)
def test_anything_else_is_left_to_the_decoder(event: bytes) -> None:
    assert AnthropicEventConverter("claude-client").whole_event(event) is None


def test_the_decoder_says_when_a_chunk_starts_at_an_event_boundary() -> None:
    decoder = SSEDecoder()
    assert decoder.between_events
    decoder.feed(DELTA[:20])
    assert not decoder.between_events
    decoder.feed(DELTA[20:])
    assert decoder.between_events
    decoder.feed(b"event: content_block_delta\n")
    assert not decoder.between_events
