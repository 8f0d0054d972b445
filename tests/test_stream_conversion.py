"""The providers' stream converters: a chunk taken whole gives the bytes the decoder's way gives."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from messagegate.providers.openai import OpenAIEventConverter
from messagegate.translate.openai_request import OpenAIRequest
from messagegate.translate.openai_stream import OpenAIStreamTranslator
from messagegate.translate.sse_decoder import SSEDecoder
from messagegate.translate.tool_ids import ToolNames

FIXTURES = Path(__file__).parent / "fixtures" / "openai"
NAMES = sorted(p.stem for p in FIXTURES.glob("*.json"))
# Ids the translator makes up afresh differ between two runs.
RANDOM_PARTS = re.compile(rb"msg_[0-9a-f]{24}|mg0\.[A-Za-z0-9_-]+|toolu_[0-9a-f]{24}")


def converter() -> OpenAIEventConverter:
    request = OpenAIRequest(payload={}, tool_names=ToolNames())
    translator = OpenAIStreamTranslator(model="claude-x", request=request, input_tokens=9)
    return OpenAIEventConverter(translator, "up")


def assert_taken_whole_as_decoded(chunks: list[bytes]) -> None:
    """Every chunk is taken whole, and gives the bytes and content the decoder's way gives."""
    whole, decoded = converter(), converter()
    decoder = SSEDecoder()
    for chunk in chunks:
        out = whole.whole_event(chunk)
        assert out is not None
        by_decoder = b"".join(decoded.convert(event) for event in decoder.feed(chunk))
        assert RANDOM_PARTS.sub(b"?", out) == RANDOM_PARTS.sub(b"?", by_decoder)
    assert RANDOM_PARTS.sub(b"?", whole.finish()) == RANDOM_PARTS.sub(b"?", decoded.finish())
    contents = [orjson.dumps(c.translator.content) for c in (whole, decoded)]
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
    "frame",
    [
        b'data: {"a":1}\r\n\r\n',
        b'event: chunk\ndata: {"a":1}\n\n',
        b'data: {"a":1}\n',
        b'data: {"a":1}\n\nevent: chunk\ndata: {"b":2}\n\n',
        b'data: {"a":1}\n\n: a comment\n\n',
        b'data: {"a":1}\n\ndata: {"b":\ndata: 2}\n\n',
        b'data: {"a":1}\n\ndata: {"b":2}\n',
    ],
)
def test_other_chunks_are_left_to_the_decoder(frame: bytes) -> None:
    assert converter().whole_event(frame) is None


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
    assert whole.translator.feed_text_line(_text_frame('"quoted"')[:-2]) is None
    assert whole.translator.feed_text_line(_text_frame("a\\b")[:-2]) is None
