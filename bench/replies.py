"""Pre-built HTTP answers of the fake upstream: OpenAI Chat Completions and Anthropic Messages."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any, Literal

import orjson

Dialect = Literal["openai", "anthropic"]

PROMPT_TOKENS = 1500
OPENAI_MODEL = "gpt-bench"
ANTHROPIC_MODEL = "claude-bench"
_CREATED = 1_700_000_000
_WORDS = ("The", " quick", " brown", " fox", " jumps", " over", " the", " lazy", " dog", ".")
_JSON_HEAD = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n"
_SSE_HEAD = (
    b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncache-control: no-cache\r\n"
    b"transfer-encoding: chunked\r\n\r\n"
)
_LAST_CHUNK = b"0\r\n\r\n"


@dataclass(frozen=True, slots=True)
class StreamReply:
    """One write per token: ``pieces[0]`` carries the headers, the last one the end of the body."""

    pieces: tuple[bytes, ...]
    whole: bytes


def token(index: int) -> str:
    return _WORDS[index % len(_WORDS)]


def text(tokens: int) -> str:
    return "".join(token(i) for i in range(tokens))


def json_response(payload: Any, status: int = 200) -> bytes:
    body = orjson.dumps(payload)
    head = _JSON_HEAD % len(body)
    if status != 200:
        head = head.replace(b"200 OK", b"%d Error" % status, 1)
    return head + body


@functools.cache
def completion(dialect: Dialect, tokens: int) -> bytes:
    """The whole non-streaming answer, headers included."""
    body = _openai_completion(tokens) if dialect == "openai" else _anthropic_message(tokens)
    return json_response(body)


@functools.cache
def stream(dialect: Dialect, tokens: int, include_usage: bool) -> StreamReply:
    """The streaming answer, cut so that each token is one write (and one HTTP chunk)."""
    if dialect == "openai":
        events = _openai_events(tokens, include_usage)
    else:
        events = _anthropic_events(tokens)
    pieces = [b"".join(_chunk(e) for e in group) for group in events]
    pieces[0] = _SSE_HEAD + pieces[0]
    pieces[-1] += _LAST_CHUNK
    return StreamReply(tuple(pieces), b"".join(pieces))


def _chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


def _sse(payload: Any, event: str | None = None) -> bytes:
    name = b"" if event is None else b"event: " + event.encode() + b"\n"
    return name + b"data: " + orjson.dumps(payload) + b"\n\n"


def _openai_completion(tokens: int) -> dict[str, Any]:
    message = {"role": "assistant", "content": text(tokens)}
    return {
        "id": "chatcmpl-bench",
        "object": "chat.completion",
        "created": _CREATED,
        "model": OPENAI_MODEL,
        "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": "stop"}],
        "usage": _openai_usage(tokens),
    }


def _openai_usage(tokens: int) -> dict[str, int]:
    total = PROMPT_TOKENS + tokens
    return {"prompt_tokens": PROMPT_TOKENS, "completion_tokens": tokens, "total_tokens": total}


def _openai_chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
    choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
    return _sse(_openai_envelope([choice]))


def _openai_envelope(choices: list[Any]) -> dict[str, Any]:
    return {
        "id": "chatcmpl-bench",
        "object": "chat.completion.chunk",
        "created": _CREATED,
        "model": OPENAI_MODEL,
        "choices": choices,
    }


def _openai_events(tokens: int, include_usage: bool) -> list[list[bytes]]:
    """Per token the events sent together; the role chunk leads, finish and usage trail."""
    groups = [[_openai_chunk({"content": token(i)})] for i in range(tokens)]
    groups[0].insert(0, _openai_chunk({"role": "assistant", "content": ""}))
    groups[-1].append(_openai_chunk({}, "stop"))
    if include_usage:
        usage = _openai_envelope([]) | {"usage": _openai_usage(tokens)}
        groups[-1].append(_sse(usage))
    groups[-1].append(b"data: [DONE]\n\n")
    return groups


def _anthropic_message(tokens: int) -> dict[str, Any]:
    return {
        "id": "msg_bench",
        "type": "message",
        "role": "assistant",
        "model": ANTHROPIC_MODEL,
        "content": [{"type": "text", "text": text(tokens)}],
        "stop_reason": "end_turn",
        "stop_sequence": None,
        "usage": {"input_tokens": PROMPT_TOKENS, "output_tokens": tokens},
    }


def _anthropic_events(tokens: int) -> list[list[bytes]]:
    """The Messages stream grammar: start, block start, ping, deltas, block stop, delta, stop."""
    start = _anthropic_message(0) | {"content": [], "stop_reason": None}
    start["usage"] = {"input_tokens": PROMPT_TOKENS, "output_tokens": 1}
    block = {
        "type": "content_block_start",
        "index": 0,
        "content_block": {"type": "text", "text": ""},
    }
    groups = [[_delta(token(i))] for i in range(tokens)]
    groups[0][:0] = [
        _sse({"type": "message_start", "message": start}, "message_start"),
        _sse(block, "content_block_start"),
        _sse({"type": "ping"}, "ping"),
    ]
    end = {"stop_reason": "end_turn", "stop_sequence": None}
    groups[-1] += [
        _sse({"type": "content_block_stop", "index": 0}, "content_block_stop"),
        _sse(
            {"type": "message_delta", "delta": end, "usage": {"output_tokens": tokens}},
            "message_delta",
        ),
        _sse({"type": "message_stop"}, "message_stop"),
    ]
    return groups


def _delta(value: str) -> bytes:
    delta = {
        "type": "content_block_delta",
        "index": 0,
        "delta": {"type": "text_delta", "text": value},
    }
    return _sse(delta, "content_block_delta")
