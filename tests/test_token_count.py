"""Tests for the offline token counter in messagegate.translate.token_count."""

from __future__ import annotations

import base64
import json
import random
import shutil
import struct
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import tiktoken
import tiktoken.load

from messagegate.translate import token_count as tc

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "claude-code"


def _reset() -> None:
    tc._load.cache_clear()
    tc._resolve.cache_clear()
    tc._memo = tc._Memo(tc._MEMO_MAX_CHARS)


@pytest.fixture
def fresh() -> Iterator[None]:
    """Forget loaded encodings and memoised counts before and after a test that reconfigures."""
    _reset()
    yield
    _reset()


def _png(width: int, height: int) -> str:
    header = (
        b"\x89PNG\r\n\x1a\n" + struct.pack(">I", 13) + b"IHDR" + struct.pack(">II", width, height)
    )
    return base64.b64encode(header + b"\x08\x06\x00\x00\x00" + b"\x00" * 64).decode()


def _image(data: str, media_type: str = "image/png") -> dict[str, Any]:
    return {"type": "image", "source": {"type": "base64", "media_type": media_type, "data": data}}


def _user(content: Any) -> dict[str, Any]:
    return {"role": "user", "content": content}


def _body(*messages: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"model": "claude-sonnet-4-5", "max_tokens": 100, "messages": list(messages), **extra}


WEATHER_TOOL = {
    "name": "get_weather",
    "description": "Get the current weather in a given location",
    "input_schema": {
        "type": "object",
        "properties": {"location": {"type": "string", "description": "City and state"}},
        "required": ["location"],
    },
}


# --- the encoding itself ---------------------------------------------------------------------


@pytest.mark.usefixtures("fresh")
def test_shipped_o200k_is_found_offline(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_download(*_: object, **__: object) -> None:
        raise AssertionError("must not go through tiktoken's downloading loader")

    monkeypatch.setattr(tiktoken, "get_encoding", no_download)
    monkeypatch.setattr(tiktoken.load, "read_file", no_download)
    assert tc.active_encoding() == "o200k_base"
    assert tc.active_encoding("cl100k_base") == "cl100k_base"


def test_known_token_ids_match_the_official_vocabularies() -> None:
    # The ids tiktoken's own test-suite pins for these encodings.
    o200k = tc._resolve("o200k_base")
    cl100k = tc._resolve("cl100k_base")
    assert o200k is not None
    assert cl100k is not None
    assert o200k.encode_ordinary("hello world") == [24912, 2375]
    assert cl100k.encode_ordinary("hello world") == [15339, 1917]
    assert o200k.n_vocab == 200019
    assert cl100k.n_vocab == 100277


def test_loaded_vocabularies_keep_no_python_copy_of_their_ranks() -> None:
    # tiktoken keeps them only to pickle an Encoding (~27 MB each); the Rust core has its own.
    for name in ("o200k_base", "cl100k_base"):
        encoding = tc._resolve(name)
        assert encoding is not None
        assert encoding._mergeable_ranks == {}
        assert len(encoding.encode_ordinary("hello world")) == 2


def test_count_text_fixed_strings() -> None:
    assert tc.count_text("") == 0
    assert tc.count_text("hello world") == 2
    assert tc.count_text("hello world", "cl100k_base") == 2
    assert tc.count_text("Hello, world!") == 4
    assert tc.count_text("a" * 1000) < 1000
    long = "The quick brown fox jumps over the lazy dog. " * 50
    assert tc.count_text(long) == 50 * 10 + 1  # 10 per sentence, and the trailing space
    assert tc.count_text(long) == tc.count_text(long)  # memoised path agrees


def test_special_token_text_counts_as_plain_text() -> None:
    assert tc.count_text("<|endoftext|>") > 1
    assert tc.count_text("<|endofprompt|> hi") > 2


def test_unknown_encoding_is_rejected() -> None:
    with pytest.raises(ValueError, match="unsupported encoding"):
        tc.count_text("hi", "p50k_base")


def _use_dir(monkeypatch: pytest.MonkeyPatch, directory: Path) -> None:
    monkeypatch.setattr(tc, "_ENCODINGS_DIR", directory)


@pytest.mark.usefixtures("fresh")
def test_falls_back_to_cl100k_when_only_it_is_available(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    shutil.copy(tc._ENCODINGS_DIR / "cl100k_base.tiktoken", tmp_path)
    _use_dir(monkeypatch, tmp_path)
    assert tc.active_encoding("o200k_base") == "cl100k_base"
    assert tc.count_text("hello world") == 2


@pytest.mark.usefixtures("fresh")
def test_memory_is_handed_back_once_per_vocabulary_loaded(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    trims: list[None] = []
    monkeypatch.setattr(tc, "_release_freed_memory", lambda: trims.append(None))
    shutil.copy(tc._ENCODINGS_DIR / "cl100k_base.tiktoken", tmp_path)
    _use_dir(monkeypatch, tmp_path)
    assert tc.active_encoding("o200k_base") == "cl100k_base"
    assert tc.count_text("hello world", "cl100k_base") == 2
    assert len(trims) == 1  # o200k_base was not found: nothing was built for it


def test_releasing_memory_is_harmless_anywhere(monkeypatch: pytest.MonkeyPatch) -> None:
    tc._release_freed_memory()
    monkeypatch.setattr(sys, "platform", "darwin")
    tc._release_freed_memory()


@pytest.mark.usefixtures("fresh")
def test_tampered_file_is_ignored_and_bytes_heuristic_used(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    for name in ("o200k_base", "cl100k_base"):
        (tmp_path / f"{name}.tiktoken").write_bytes(b"aGVsbG8= 0\n")
    _use_dir(monkeypatch, tmp_path)
    assert tc.active_encoding() is None
    assert tc.count_text("12345678") == 2
    assert tc.count_text("123456789") == 3
    assert tc.count_request(_body(_user("hello"))) > 0


# --- requests ----------------------------------------------------------------------------------


def test_empty_request_is_the_request_overhead() -> None:
    assert tc.count_request({"messages": []}) == tc.REQUEST_OVERHEAD
    assert tc.count_request({}) == tc.REQUEST_OVERHEAD


def test_simple_message() -> None:
    body = _body(_user("hello world"))
    assert tc.count_request(body) == tc.REQUEST_OVERHEAD + tc.MESSAGE_OVERHEAD + 2
    blocks = _body(_user([{"type": "text", "text": "hello world"}]))
    assert tc.count_request(blocks) == tc.count_request(body)


def test_system_string_and_blocks_are_counted() -> None:
    base = tc.count_request(_body(_user("hi")))
    as_string = tc.count_request(_body(_user("hi"), system="hello world"))
    as_blocks = tc.count_request(
        _body(_user("hi"), system=[{"type": "text", "text": "hello world"}])
    )
    assert as_string == as_blocks == base + 2


def test_system_role_message_is_counted() -> None:
    base = tc.count_request(_body(_user("hi")))
    with_system = tc.count_request(_body(_user("hi"), {"role": "system", "content": "hello world"}))
    assert with_system == base + tc.MESSAGE_OVERHEAD + 2


def test_tools_change_the_count() -> None:
    body = _body(_user("What's the weather in Paris?"))
    without = tc.count_request(body)
    one = tc.count_request({**body, "tools": [WEATHER_TOOL]})
    other_tool = {**WEATHER_TOOL, "name": "get_forecast", "description": "Forecast for 7 days"}
    two = tc.count_request({**body, "tools": [WEATHER_TOOL, other_tool]})
    assert one > without + tc.TOOLS_PREAMBLE
    assert two > one
    changed_schema = {**WEATHER_TOOL, "input_schema": {"type": "object", "properties": {}}}
    assert tc.count_request({**body, "tools": [changed_schema]}) < one
    assert tc.count_request({**body, "tools": []}) == without


def test_forced_tool_choice_uses_the_smaller_preamble() -> None:
    body = _body(_user("hi"), tools=[WEATHER_TOOL])
    auto = tc.count_request(body)
    forced = tc.count_request({**body, "tool_choice": {"type": "any"}})
    assert auto - forced == tc.TOOLS_PREAMBLE - tc.TOOLS_PREAMBLE_FORCED


def test_server_tool_counts_its_json() -> None:
    body = _body(_user("hi"))
    web_search = {"type": "web_search_20250305", "name": "web_search", "max_uses": 5}
    assert tc.count_request({**body, "tools": [web_search]}) > tc.count_request(body) + 346


def test_images_are_counted() -> None:
    base = tc.count_request(_body(_user("describe")))
    small = tc.count_request(_body(_user([_image(_png(200, 200)), "describe"])))
    assert small - base == 54  # ceil(200 * 200 / 750)
    huge = tc.count_request(_body(_user([_image(_png(4000, 3000))])))
    jpeg = tc.count_request(_body(_user([_image("/9j/4AAQSkZJRg==", "image/jpeg")])))
    url = {"type": "image", "source": {"type": "url", "url": "https://example.com/a.png"}}
    by_url = tc.count_request(_body(_user([url])))
    only_overhead = tc.REQUEST_OVERHEAD + tc.MESSAGE_OVERHEAD
    assert huge - only_overhead == tc.IMAGE_TOKENS
    assert jpeg - only_overhead == tc.IMAGE_TOKENS
    assert by_url - only_overhead == tc.IMAGE_TOKENS
    gif = base64.b64encode(b"GIF89a" + struct.pack("<HH", 75, 100) + b"\x00" * 20).decode()
    assert tc.count_request(_body(_user([_image(gif, "image/gif")]))) - only_overhead == 10


def test_documents_are_counted() -> None:
    only_overhead = tc.REQUEST_OVERHEAD + tc.MESSAGE_OVERHEAD
    text_doc = {
        "type": "document",
        "source": {"type": "text", "media_type": "text/plain", "data": "hello world"},
        "title": "hello world",
    }
    assert tc.count_request(_body(_user([text_doc]))) - only_overhead == 4
    pdf = (
        b"%PDF-1.4\n1 0 obj << /Type /Pages /Kids [2 0 R 3 0 R] /Count 2 >> endobj\n"
        b"2 0 obj << /Type /Page /Parent 1 0 R >> endobj\n3 0 obj <</Type/Page>> endobj\n"
    )
    pdf_doc = {
        "type": "document",
        "source": {
            "type": "base64",
            "media_type": "application/pdf",
            "data": base64.b64encode(pdf).decode(),
        },
    }
    assert tc.count_request(_body(_user([pdf_doc]))) - only_overhead == 2 * tc.PDF_PAGE_TOKENS
    content_doc = {
        "type": "document",
        "source": {"type": "content", "content": [{"type": "text", "text": "hello world"}]},
    }
    assert tc.count_request(_body(_user([content_doc]))) - only_overhead == 2


def test_tool_use_and_tool_result_are_counted() -> None:
    tool_use = {
        "type": "tool_use",
        "id": "toolu_01",
        "name": "get_weather",
        "input": {"location": "Paris, France"},
    }
    only_overhead = tc.REQUEST_OVERHEAD + tc.MESSAGE_OVERHEAD
    expected_use = (
        tc.TOOL_BLOCK_OVERHEAD
        + tc.count_text("get_weather")
        + tc.count_text('{"location":"Paris, France"}')
    )
    got = tc.count_request(_body({"role": "assistant", "content": [tool_use]}))
    assert got - only_overhead == expected_use
    as_string = {"type": "tool_result", "tool_use_id": "toolu_01", "content": "hello world"}
    as_blocks = {
        "type": "tool_result",
        "tool_use_id": "toolu_01",
        "content": [{"type": "text", "text": "hello world"}, _image(_png(200, 200))],
        "is_error": True,
    }
    assert tc.count_request(_body(_user([as_string]))) - only_overhead == (
        tc.TOOL_BLOCK_OVERHEAD + 2
    )
    assert tc.count_request(_body(_user([as_blocks]))) - only_overhead == (
        tc.TOOL_BLOCK_OVERHEAD + 2 + 54
    )
    empty = {"type": "tool_result", "tool_use_id": "toolu_01"}
    assert tc.count_request(_body(_user([empty]))) - only_overhead == tc.TOOL_BLOCK_OVERHEAD


def test_thinking_blocks_are_counted() -> None:
    only_overhead = tc.REQUEST_OVERHEAD + tc.MESSAGE_OVERHEAD
    thinking = {"type": "thinking", "thinking": "hello world", "signature": "x" * 400}
    redacted = {"type": "redacted_thinking", "data": "A" * 400}
    assistant = {"role": "assistant", "content": [thinking]}
    assert tc.count_request(_body(assistant)) - only_overhead == 2
    assistant = {"role": "assistant", "content": [redacted]}
    assert tc.count_request(_body(assistant)) - only_overhead == 100


def test_unknown_blocks_count_their_json() -> None:
    only_overhead = tc.REQUEST_OVERHEAD + tc.MESSAGE_OVERHEAD
    block = {"type": "search_result", "source": "https://example.com", "title": "Example"}
    expected = tc.count_text(json.dumps(block, separators=(",", ":")))
    assert tc.count_request(_body(_user([block]))) - only_overhead == expected
    assert expected > 5


def test_malformed_shapes_do_not_raise() -> None:
    body: dict[str, Any] = {
        "system": 42,
        "messages": ["bare string", None, {"role": "user"}, {"role": "user", "content": 7}],
        "tools": [None, "x", {"name": 1, "input_schema": {}}],
    }
    assert tc.count_request(body) > tc.REQUEST_OVERHEAD


# --- Claude Code fixtures ------------------------------------------------------------------------


def _fixture(name: str) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((FIXTURES / f"{name}.json").read_text())
    return loaded


def test_claude_code_first_turn_is_plausible() -> None:
    body = _fixture("messages_first_turn")
    count = tc.count_request(body)
    # 24 tools (~64 KB of JSON) + ~12 KB of system text: measured 17,358 with o200k_base.
    assert 15_000 <= count <= 21_000
    assert count == tc.count_request(body)  # memoised second pass agrees
    without_tools = tc.count_request({k: v for k, v in body.items() if k != "tools"})
    assert 1_500 <= without_tools <= 4_500
    assert count - without_tools > 12_000
    raw_chars = len(json.dumps(body))
    assert raw_chars / 6 < count < raw_chars / 3


def test_claude_code_follow_up_turn_counts_more() -> None:
    first = tc.count_request(_fixture("messages_first_turn"))
    second = tc.count_request(_fixture("messages_tool_result_turn"))
    assert first < second < first + 2_000


def test_claude_code_count_tokens_bodies() -> None:
    minimal = tc.count_request(_fixture("count_tokens_minimal"))
    assert minimal == tc.REQUEST_OVERHEAD + tc.MESSAGE_OVERHEAD + tc.count_text("foo")
    with_tools = tc.count_request(_fixture("count_tokens_with_tools"))
    assert 5_000 <= with_tools <= 12_000


def _words(count: int, seed: int) -> str:
    rng = random.Random(seed)
    vocabulary = ["the", "gateway", "routes", "def", "return", "(x)", "{", "}", "token", "stream"]
    return " ".join(rng.choice(vocabulary) for _ in range(count))


def test_local_counting_work_is_bounded_per_text_and_per_request(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """4 MiB of text froze the event loop for seconds: a long text is counted from samples, and
    a request's exact counting stops at an allowance; both stay close to the exact count."""
    encoding = tc._resolve("o200k_base")
    assert encoding is not None
    long_text = _words(60_000, seed=3)  # ~330 K characters
    exact = len(encoding.encode_ordinary(long_text))
    encoded: list[int] = []
    real = encoding.encode_ordinary

    def counting(text: str) -> list[int]:
        encoded.append(len(text))
        return real(text)

    monkeypatch.setattr(encoding, "encode_ordinary", counting)
    assert abs(tc.count_text(long_text) - exact) < exact * 0.05
    assert sum(encoded) <= 8 * 8192
    encoded.clear()
    many = [{"role": "user", "content": _words(4000, seed=i)} for i in range(200)]  # ~4.4 MB
    estimate = tc.count_request({"messages": many})
    assert sum(encoded) <= 1024 * 1024 + 8 * 8192
    assert estimate > 200 * 4000 * 0.8
    # A long run of whitespace, which overflowed tiktoken's stack when encoded whole.
    assert tc.count_text(" " * 2_000_000) > 0


def test_the_cached_prefix_ends_at_the_last_breakpoint_in_cache_order() -> None:
    marked = {"type": "ephemeral"}
    tool = {"name": "t", "description": "d", "input_schema": {"type": "object"}}
    first = {"type": "text", "text": "first turn " * 50}
    last = {"type": "text", "text": "last turn " * 50}
    body: dict[str, Any] = {
        "tools": [tool],
        "system": [{"type": "text", "text": "system " * 50}],
        "messages": [{"role": "user", "content": [first | {"cache_control": marked}, last]}],
    }
    upto_first = tc.cached_prefix_tokens(body)
    assert 0 < upto_first < tc.count_request(body)
    assert tc.cached_prefix_tokens(body | {"messages": [{"role": "user", "content": "x"}]}) == 0
    body["tools"] = [tool | {"cache_control": marked}]
    assert tc.cached_prefix_tokens(body) == upto_first  # a later breakpoint decides
    body["messages"][0]["content"] = [first, last | {"cache_control": marked}]
    assert tc.cached_prefix_tokens(body) > upto_first
