"""The SSE relay and the stream converters: events taken from their bytes give what the decoder's
way gives."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from messagegate.api.sse import encode_text_delta
from messagegate.translate.anthropic import AnthropicEventConverter
from messagegate.translate.openai_events import OpenAIEventConverter
from messagegate.translate.openai_request import OpenAIRequest
from messagegate.translate.openai_stream import OpenAIStreamTranslator
from messagegate.translate.sse_decoder import ServerSentEvent, SSEDecoder
from messagegate.translate.stream_relay import SSERelay
from messagegate.translate.tool_ids import ToolNames

FIXTURES = Path(__file__).parent / "fixtures" / "openai"
NAMES = sorted(p.stem for p in FIXTURES.glob("*.json"))
# Ids the translator makes up afresh differ between two runs.
RANDOM_PARTS = re.compile(rb"msg_[0-9a-f]{24}|mg0\.[A-Za-z0-9_-]+|toolu_[0-9a-f]{24}")


def converter() -> OpenAIEventConverter:
    request = OpenAIRequest(payload={}, tool_names=ToolNames())
    translator = OpenAIStreamTranslator(model="claude-x", request=request, input_tokens=9)
    return OpenAIEventConverter(translator, "up")


class _RefusingDecoder(SSEDecoder):
    """A decoder for a relay that must take every event from its bytes."""

    def feed(self, chunk: bytes) -> list[ServerSentEvent]:
        raise AssertionError(f"decoded: {chunk!r}")


def relayed(
    converter: OpenAIEventConverter | AnthropicEventConverter, chunks: list[bytes], *, decode: bool
) -> bytes:
    """What an SSE relay writes for `chunks`; with decode=False, every event must be taken from
    its bytes."""
    out: list[bytes] = []
    relay = SSERelay(converter)
    if not decode:
        relay._decoder = _RefusingDecoder()
    for chunk in chunks:
        out.append(relay.feed(chunk))
    out.append(relay.end())
    return RANDOM_PARTS.sub(b"?", b"".join(out))


def decoded(
    converter: OpenAIEventConverter | AnthropicEventConverter, chunks: list[bytes]
) -> bytes:
    """What the decoder's way gives for `chunks`: each event decoded, then converted."""
    decoder = SSEDecoder()
    out = [converter.convert(event) for chunk in chunks for event in decoder.feed(chunk)]
    return RANDOM_PARTS.sub(b"?", b"".join(out) + converter.finish())


def assert_taken_whole_as_decoded(chunks: list[bytes]) -> None:
    """Every event is taken from its bytes, and gives the bytes and content the decoder's way
    gives."""
    whole, by_decoder = converter(), converter()
    assert relayed(whole, chunks, decode=False) == decoded(by_decoder, chunks)
    contents = [orjson.dumps(c.translator.content) for c in (whole, by_decoder)]
    assert RANDOM_PARTS.sub(b"?", contents[0]) == RANDOM_PARTS.sub(b"?", contents[1])


@pytest.mark.parametrize("name", NAMES)
def test_whole_chunks_translate_as_the_decoded_events_do(name: str) -> None:
    recorded = json.loads((FIXTURES / f"{name}.json").read_text())
    frames = [b"data: " + orjson.dumps(chunk) + b"\n\n" for chunk in recorded["chunks"]]
    assert_taken_whole_as_decoded(frames)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("group", [2, 3, 1000])
def test_chunks_of_several_whole_events_translate_as_the_decoded_events_do(
    name: str, group: int
) -> None:
    recorded = json.loads((FIXTURES / f"{name}.json").read_text())
    frames = [b"data: " + orjson.dumps(chunk) + b"\n\n" for chunk in recorded["chunks"]]
    frames.append(b"data: [DONE]\n\n")
    chunks = [b"".join(frames[i : i + group]) for i in range(0, len(frames), group)]
    assert_taken_whole_as_decoded(chunks)


@pytest.mark.parametrize(
    "event",
    [
        b'event: chunk\ndata: {"a":1}\n\n',
        b'data: {"a":1}\ndata: {"b":2}\n\n',
        b": a comment\n\n",
        b'id: 7\ndata: {"a":1}\n\n',
    ],
)
def test_other_events_are_left_to_the_decoder(event: bytes) -> None:
    assert converter().whole_event(event) is None


HELLO = [
    b'data: {"choices":[{"index":0,"delta":{"role":"assistant","content":"Hi"}}]}\n\n',
    b'data: {"choices":[{"index":0,"delta":{"content":" there"}}]}\n\n',
    b'data: {"choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}\n\n',
    b"data: [DONE]\n\n",
]


@pytest.mark.parametrize(
    "chunks",
    [
        [b"".join(HELLO).replace(b"\n", b"\r\n")],
        [HELLO[0], HELLO[1] + b': a comment\n\nevent: chunk\ndata: {"a":1}\n\n', *HELLO[2:]],
        [HELLO[0] + HELLO[1][:20], HELLO[1][20:] + HELLO[2], HELLO[3]],
        [HELLO[0], b'data: {"choices":\ndata: []}\n\n', *HELLO[1:]],
    ],
)
def test_chunks_with_other_events_are_relayed_as_the_decoded_events_are(
    chunks: list[bytes],
) -> None:
    assert relayed(converter(), chunks, decode=True) == decoded(converter(), chunks)


def _text_frame(text: str, **changes: Any) -> bytes:
    chunk: dict[str, Any] = {
        "id": "chatcmpl-1",
        "object": "chat.completion.chunk",
        "created": 1700000000,
        "model": "gpt-up",
        "choices": [{"index": 0, "delta": {"content": text}, "finish_reason": None}],
    }
    for key, value in changes.items():
        if key in ("finish_reason", "index"):
            chunk["choices"][0][key] = value
        elif key == "role":
            chunk["choices"][0]["delta"]["role"] = value
        else:
            chunk[key] = value
    return b"data: " + orjson.dumps(chunk) + b"\n\n"


_CHANGES = st.sampled_from(
    [
        {},
        {},
        {},
        {"created": 1700000001},
        {"role": "assistant"},
        {"usage": None},
        {"usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}},
        {"index": 1},
        {"finish_reason": "stop"},
        {"x_groq": {"id": "q"}},
    ]
)
_TEXTS = st.one_of(
    st.text(max_size=12),
    st.sampled_from(["tok", " fox", 'say "hi"', "C:\\dir", "line\nnext", "\x00\x1f\x7f", "é😀"]),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(_TEXTS, _CHANGES), min_size=1, max_size=12))
def test_text_deltas_taken_from_their_bytes_equal_the_decoded_ones(
    script: list[tuple[str, dict[str, Any]]],
) -> None:
    frames = [_text_frame("Hi", role="assistant")]
    frames += [_text_frame(text, **changes) for text, changes in script]
    frames.append(_text_frame("", finish_reason="stop"))
    assert_taken_whole_as_decoded(frames)


def test_the_text_bytes_path_is_taken_for_the_usual_chunk(monkeypatch: pytest.MonkeyPatch) -> None:
    whole = converter()
    whole.whole_event(_text_frame("Hi", role="assistant"))
    whole.whole_event(_text_frame(" there"))
    monkeypatch.setattr(orjson, "loads", None)  # parsing now would fail the test
    out = whole.whole_event(_text_frame(" fox"))
    assert out == (
        b'event: content_block_delta\ndata: {"type":"content_block_delta","index":0,'
        b'"delta":{"type":"text_delta","text":" fox"}}\n\n'
    )
    assert whole.translator.content == []  # the block is still open
    assert whole.translator.feed_text_event(_text_frame('"quoted"')) is None
    assert whole.translator.feed_text_event(_text_frame("a\\b")) is None


def test_a_run_of_text_events_in_one_chunk_is_taken_in_one_go(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    whole = converter()
    whole.whole_event(_text_frame("Hi", role="assistant"))
    whole.whole_event(_text_frame(" there"))
    monkeypatch.setattr(orjson, "loads", None)  # parsing now would fail the test
    monkeypatch.setattr(whole.translator, "feed_text_event", None)  # so would one at a time
    texts = [" quick", " brown", " f\u00f6x"]
    run = b"".join(_text_frame(text) for text in texts)
    chunk = b": a comment\n\n" + run + _text_frame('"quoted"') + _text_frame(" end")
    start = len(b": a comment\n\n")
    assert whole.whole_run(chunk, 0) == (b"", 0)
    out, end = whole.whole_run(chunk, start)
    assert end == start + len(run)  # up to the text its bytes cannot give as they are
    assert out == b"".join(encode_text_delta(0, text) for text in texts)
    assert whole.translator._open is not None
    assert whole.translator._open.texts == ["Hi", " there", *texts]


def test_the_event_that_opens_the_text_block_teaches_its_bytes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    whole = converter()
    whole.whole_event(_text_frame("", role="assistant"))  # OpenAI's first chunk: no text yet
    whole.whole_event(_text_frame("Hi"))  # opens the block
    monkeypatch.setattr(orjson, "loads", None)  # parsing now would fail the test
    assert whole.whole_event(_text_frame(" there")) == encode_text_delta(0, " there")
    run = _text_frame(" a") + _text_frame(" b")
    assert whole.whole_run(run, 0) == (
        encode_text_delta(0, " a") + encode_text_delta(0, " b"),
        len(run),
    )


def test_a_run_stops_before_a_text_that_is_not_utf8() -> None:
    whole = converter()
    whole.whole_event(_text_frame("Hi"))
    good, bad = _text_frame(" a"), _text_frame(" b").replace(b" b", b" \xff")
    assert whole.whole_run(good + bad, 0) == (encode_text_delta(0, " a"), len(good))
    assert whole.whole_run(bad, 0) == (b"", 0)
    assert whole.translator._open is not None
    assert whole.translator._open.texts == ["Hi", " a"]


ANTHROPIC_ANSWER = [
    b'event: message_start\ndata: {"type":"message_start","message":{"model":"up",'
    b'"usage":{"input_tokens":5,"output_tokens":1}}}\n\n',
    b'event: ping\ndata: {"type": "ping"}\n\n',
    b'event: content_block_start\ndata: {"type":"content_block_start","index":0,'
    b'"content_block":{"type":"text","text":""}}\n\n',
    b'event: content_block_delta\ndata: {"type":"content_block_delta","index":0,'
    b'"delta":{"type":"text_delta","text":"Hi \\"there\\"\\n"}}\n\n',
    b'event: content_block_stop\ndata: {"type":"content_block_stop","index":0}\n\n',
    b'event: message_delta\ndata: {"type":"message_delta","delta":{"stop_reason":"end_turn"},'
    b'"usage":{"output_tokens":3}}\n\n',
    b'event: message_stop\ndata: {"type":"message_stop"}\n\n',
]


@pytest.mark.parametrize("group", [1, 2, 3, 1000])
def test_anthropic_chunks_of_whole_events_are_relayed_as_the_decoded_events_are(group: int) -> None:
    chunks = [
        b"".join(ANTHROPIC_ANSWER[i : i + group]) for i in range(0, len(ANTHROPIC_ANSWER), group)
    ]
    whole, by_decoder = (
        AnthropicEventConverter("claude-client"),
        AnthropicEventConverter("claude-client"),
    )
    assert relayed(whole, chunks, decode=False) == decoded(by_decoder, chunks)
    assert whole.usage == by_decoder.usage


def test_anthropic_events_that_pass_byte_for_byte_are_taken_as_one_slice() -> None:
    relay = AnthropicEventConverter("claude-client")
    chunk = b"".join(ANTHROPIC_ANSWER)
    start = len(ANTHROPIC_ANSWER[0])
    verbatim = b"".join(ANTHROPIC_ANSWER[1:5])  # ping and the content block's events
    assert relay.whole_run(chunk, 0) == (b"", 0)  # message_start names the client's model
    assert relay.whole_run(chunk, start) == (verbatim, start + len(verbatim))
    unfinished = chunk[: start + len(verbatim) - 1]  # the last blank line not there yet
    assert relay.whole_run(unfinished, start) == (
        b"".join(ANTHROPIC_ANSWER[1:4]),
        start + len(b"".join(ANTHROPIC_ANSWER[1:4])),
    )


def test_anthropic_chunks_with_other_events_are_relayed_as_the_decoded_events_are() -> None:
    odd = b"event: content_block_delta\ndata: {}\ndata: {}\n\n"  # two data lines
    chunks = [b"".join(ANTHROPIC_ANSWER[:3]) + odd + b"".join(ANTHROPIC_ANSWER[3:])]
    client = "claude-client"
    expected = decoded(AnthropicEventConverter(client), chunks)
    assert relayed(AnthropicEventConverter(client), chunks, decode=True) == expected


def test_anthropic_chunks_with_carriage_returns_are_relayed_as_the_decoded_events_are() -> None:
    # "\r\n" ends a line too: a fast path that split on "\n" alone would keep the "\r" in the
    # event's name.
    crlf = b"event: message_delta\r\ndata: " + ANTHROPIC_ANSWER[-2].split(b"data: ", 1)[1]
    chunks = [b"".join(ANTHROPIC_ANSWER[:-2]), crlf, ANTHROPIC_ANSWER[-1]]
    whole, by_decoder = (
        AnthropicEventConverter("claude-client"),
        AnthropicEventConverter("claude-client"),
    )
    assert relayed(whole, chunks, decode=True) == decoded(by_decoder, chunks)
    assert whole.usage.output_tokens == 3


def test_a_chunk_that_ends_an_event_begun_in_the_chunk_before_goes_to_the_decoder() -> None:
    # The first of two data lines came alone: the second, a whole line, is not a whole event.
    begun = b'data: {"choices":[{"index":0,\n'
    ended = b'data: "delta":{"role":"assistant","content":"Hi"}}]}\n\n'
    chunks = [begun, ended, *HELLO[1:], b"data: [DONE]\n\n"]
    assert relayed(converter(), chunks, decode=True) == decoded(converter(), chunks)
