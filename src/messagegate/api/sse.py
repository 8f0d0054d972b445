"""Server-sent event framing for the Messages API stream (``event:`` line, one ``data:`` line)."""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import orjson

Event = tuple[str, dict[str, Any]]


def _head(name: str) -> bytes:
    return b"event: " + name.encode() + b"\ndata: "


# Every event of a stream is framed here, so the usual names' heads are encoded once. Only these:
# an upstream's relayed event names must not grow the table.
_HEADS = {
    name: _head(name)
    for name in (
        "message_start",
        "content_block_start",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
        "ping",
        "error",
    )
}


def encode_event(name: str, data: dict[str, Any]) -> bytes:
    return b"".join((_HEADS.get(name) or _head(name), orjson.dumps(data), b"\n\n"))


def encode_raw_event(name: str, data: str) -> bytes:
    """Frame an event whose JSON is already serialised, so relayed events keep their bytes."""
    if "\n" in data:
        # Data that came on several ``data:`` lines goes out on as many.
        data = data.replace("\n", "\ndata: ")
    return b"".join((_HEADS.get(name) or _head(name), data.encode(), b"\n\n"))


def encode_text_delta(index: int, text: str) -> bytes:
    """``encode_event`` of a text_delta, from its constant bytes and the text: most events are."""
    return b"".join((text_delta_head(index), orjson.dumps(text), TEXT_DELTA_TAIL))


TEXT_DELTA_TAIL = b"}}\n\n"


@lru_cache(maxsize=64)
def text_delta_head(index: int) -> bytes:
    """The bytes of a text_delta before its text (``TEXT_DELTA_TAIL`` follows the text), cut
    from what ``encode_event`` frames, so the two agree."""
    delta = {"type": "text_delta", "text": ""}
    event = encode_event(
        "content_block_delta", {"type": "content_block_delta", "index": index, "delta": delta}
    )
    return event.removesuffix(b'""' + TEXT_DELTA_TAIL)


PING = encode_event("ping", {"type": "ping"})
