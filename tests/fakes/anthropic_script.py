"""Building Anthropic-native answers: messages, their exact SSE event sequences, errors."""

from __future__ import annotations

from typing import Any

import orjson

from fakes.upstream import Reply


def message(
    content: list[dict[str, Any]],
    *,
    model: str = "upstream-model",
    stop_reason: str = "end_turn",
    input_tokens: int = 11,
    output_tokens: int = 7,
) -> dict[str, Any]:
    return {
        "id": "msg_01FakeUpstreamMessage000",
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": stop_reason,
        "stop_sequence": None,
        "usage": {
            "input_tokens": input_tokens,
            "output_tokens": output_tokens,
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": 0,
        },
    }


def sse(name: str, data: dict[str, Any]) -> bytes:
    return b"event: " + name.encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n"


def events(msg: dict[str, Any], *, ping: bool = True) -> list[bytes]:
    """The event sequence Anthropic streams for `msg`, one SSE event per chunk."""
    start = {**msg, "content": [], "stop_reason": None, "stop_sequence": None}
    start["usage"] = {**msg["usage"], "output_tokens": 1}
    out = [sse("message_start", {"type": "message_start", "message": start})]
    if ping:
        out.append(sse("ping", {"type": "ping"}))
    for index, block in enumerate(msg["content"]):
        out.extend(_block_events(index, block))
    out.append(
        sse(
            "message_delta",
            {
                "type": "message_delta",
                "delta": {"stop_reason": msg["stop_reason"], "stop_sequence": None},
                "usage": {"output_tokens": msg["usage"]["output_tokens"]},
            },
        )
    )
    out.append(sse("message_stop", {"type": "message_stop"}))
    return out


def _block_events(index: int, block: dict[str, Any]) -> list[bytes]:
    kind = block["type"]
    start: dict[str, Any]
    deltas: list[dict[str, Any]]
    if kind == "text":
        start, deltas = (
            {"type": "text", "text": ""},
            [
                {"type": "text_delta", "text": block["text"][:3]},
                {"type": "text_delta", "text": block["text"][3:]},
            ],
        )
    elif kind == "thinking":
        start = {"type": "thinking", "thinking": "", "signature": ""}
        deltas = [
            {"type": "thinking_delta", "thinking": block["thinking"]},
            {"type": "signature_delta", "signature": block["signature"]},
        ]
    elif kind == "tool_use":
        start = {"type": "tool_use", "id": block["id"], "name": block["name"], "input": {}}
        raw = orjson.dumps(block["input"]).decode()
        deltas = [
            {"type": "input_json_delta", "partial_json": raw[: len(raw) // 2]},
            {"type": "input_json_delta", "partial_json": raw[len(raw) // 2 :]},
        ]
    else:
        raise ValueError(kind)
    out = [
        sse(
            "content_block_start",
            {"type": "content_block_start", "index": index, "content_block": start},
        )
    ]
    out.extend(
        sse("content_block_delta", {"type": "content_block_delta", "index": index, "delta": d})
        for d in deltas
    )
    out.append(sse("content_block_stop", {"type": "content_block_stop", "index": index}))
    return out


def reply(msg: dict[str, Any], **kwargs: Any) -> Reply:
    return Reply(json=msg, **kwargs)


def stream_reply(msg: dict[str, Any], **kwargs: Any) -> Reply:
    return Reply(chunks=events(msg), **kwargs)


def error_reply(status: int, error_type: str, text: str, **kwargs: Any) -> Reply:
    return Reply(
        status=status,
        json={"type": "error", "error": {"type": error_type, "message": text}},
        **kwargs,
    )
