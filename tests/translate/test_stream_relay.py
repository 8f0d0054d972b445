"""The stream relay's one shape: feed/end, and the usage of what it returned before a cut."""

from __future__ import annotations

import orjson
import pytest

import messagegate.translate.stream_relay as stream_relay
from messagegate.errors import UpstreamProtocolError
from messagegate.translate.anthropic import anthropic_stream
from messagegate.translate.token_count import count_text


def sse(name: str, data: dict[str, object]) -> bytes:
    return b"event: " + name.encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n"


def delta(index: int, **fields: str) -> bytes:
    payload = {"type": "content_block_delta", "index": index, "delta": fields}
    return sse("content_block_delta", payload)


START = sse(
    "message_start",
    {"type": "message_start", "message": {"model": "up", "usage": {"output_tokens": 1}}},
)


def test_what_a_chunk_completes_is_returned_and_the_end_completes_the_rest() -> None:
    relay = anthropic_stream("claude-client")
    text = delta(0, type="text_delta", text="Hi")
    assert relay.feed(START[:10]) == b""
    assert relay.feed(START[10:]).startswith(b"event: message_start")
    assert relay.feed(text) == text
    assert relay.feed(b'event: message_stop\ndata: {"type":"message_stop"}') == b""
    assert relay.end() == b'event: message_stop\ndata: {"type":"message_stop"}\n\n'


def test_an_upstream_that_ends_too_early_raises_the_documented_error() -> None:
    relay = anthropic_stream("claude-client")
    relay.feed(START)
    with pytest.raises(UpstreamProtocolError, match="ended before message_stop"):
        relay.end()


def test_a_cut_stream_counts_the_text_thinking_and_tool_input_it_returned() -> None:
    relay = anthropic_stream("claude-client", encoding="cl100k_base")
    parts = [
        START,
        delta(0, type="thinking_delta", thinking="Let me think about the weather."),
        delta(0, type="signature_delta", signature="c2lnbmF0dXJlIGJ5dGVz" * 20),
        sse("ping", {"type": "ping"}),
        delta(1, type="text_delta", text="It is sunny in Paris today."),
        delta(2, type="input_json_delta", partial_json='{"city": "Par'),
    ]
    for part in parts:
        relay.feed(part)
    # The signature and the ping are no output.
    sent = 'Let me think about the weather.It is sunny in Paris today.{"city": "Par'
    usage = relay.delivered_usage()
    assert usage.output_tokens == count_text(sent, "cl100k_base")
    assert usage.estimated
    assert relay.usage.output_tokens == 1  # what the upstream reported stays apart


def test_a_cut_stream_is_billed_no_less_than_the_upstream_reported() -> None:
    relay = anthropic_stream("claude-client")
    relay.feed(START.replace(b'"output_tokens":1', b'"output_tokens":40'))
    relay.feed(delta(0, type="text_delta", text="Hi"))
    usage = relay.delivered_usage()
    assert (usage.output_tokens, usage.estimated) == (40, False)


def test_a_long_stream_keeps_a_bounded_amount_and_counts_it_all(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(stream_relay, "MAX_KEPT", 1000)
    relay = anthropic_stream("claude-client")
    relay.feed(START)
    word = delta(0, type="text_delta", text=" hello")
    for _ in range(500):
        relay.feed(word)
        assert relay._kept_size <= 1000
    assert relay.delivered_usage().output_tokens == 500 * count_text(" hello")
