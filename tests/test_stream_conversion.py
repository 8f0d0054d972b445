"""The providers' stream converters: a chunk taken whole gives the bytes the decoder's way gives."""

from __future__ import annotations

import json
import re
from pathlib import Path

import orjson
import pytest

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


@pytest.mark.parametrize("name", NAMES)
def test_whole_chunks_translate_as_the_decoded_events_do(name: str) -> None:
    recorded = json.loads((FIXTURES / f"{name}.json").read_text())
    frames = [b"data: " + orjson.dumps(chunk) + b"\n\n" for chunk in recorded["chunks"]]
    whole, decoded = converter(), converter()
    decoder = SSEDecoder()
    taken = 0
    for frame in frames:
        out = whole.whole_event(frame)
        assert out is not None
        taken += 1
        by_decoder = b"".join(decoded.convert(event) for event in decoder.feed(frame))
        assert RANDOM_PARTS.sub(b"?", out) == RANDOM_PARTS.sub(b"?", by_decoder)
    assert taken == len(frames)
    assert RANDOM_PARTS.sub(b"?", whole.finish()) == RANDOM_PARTS.sub(b"?", decoded.finish())


@pytest.mark.parametrize(
    "frame",
    [
        b"data: [DONE]\n\n",
        b'data: {"a":1}\n\ndata: {"b":2}\n\n',
        b'data: {"a":1}\r\n\r\n',
        b'event: chunk\ndata: {"a":1}\n\n',
        b'data: {"a":1}\n',
    ],
)
def test_other_chunks_are_left_to_the_decoder(frame: bytes) -> None:
    assert converter().whole_event(frame) is None
