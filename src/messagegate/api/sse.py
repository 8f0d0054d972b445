"""Server-sent event framing for the Messages API stream (``event:`` line, one ``data:`` line)."""

from __future__ import annotations

from typing import Any

import orjson

Event = tuple[str, dict[str, Any]]


def encode_event(name: str, data: dict[str, Any]) -> bytes:
    return b"event: " + name.encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n"


def encode_raw_event(name: str, data: str) -> bytes:
    """Frame an event whose JSON is already serialised, so relayed events keep their bytes."""
    if "\n" in data:
        # Data that came on several ``data:`` lines goes out on as many.
        data = data.replace("\n", "\ndata: ")
    return b"event: " + name.encode() + b"\ndata: " + data.encode() + b"\n\n"


PING = encode_event("ping", {"type": "ping"})
