"""The output tokens in client stream bytes already sent: what a stream the client cut is billed."""

from __future__ import annotations

from typing import Any

import orjson

from messagegate.errors import UpstreamProtocolError
from messagegate.translate.sse_decoder import SSEDecoder
from messagegate.translate.token_count import count_text

# The field of each content delta that carries generated output.
_DELTA_TEXT = {
    "text_delta": "text",
    "input_json_delta": "partial_json",
    "thinking_delta": "thinking",
}
# The fields of a content block's start that may already carry some.
_START_TEXT = ("text", "thinking")


def delivered_output_tokens(sent: bytes, encoding: str) -> int:
    """The tokens of the text, tool-input JSON and thinking in `sent`, whole Anthropic SSE events
    (the gateway's own output), counted with `encoding`."""
    if not sent:
        return 0
    decoder = SSEDecoder(max_event=max(len(sent), 1))
    try:
        events = decoder.feed(sent) + decoder.finish()
    except UpstreamProtocolError:
        return 0
    parts: list[str] = []
    for event in events:
        if event.event == "content_block_delta" or event.event == "content_block_start":
            parts += _output_texts(event.data)
    return count_text("".join(parts), encoding)


def _output_texts(data: str) -> list[str]:
    try:
        payload = orjson.loads(data)
    except orjson.JSONDecodeError:
        return []
    if not isinstance(payload, dict):
        return []
    delta = payload.get("delta")
    if isinstance(delta, dict):
        field = _DELTA_TEXT.get(delta.get("type"))  # type: ignore[arg-type]
        return _strings(delta, (field,) if field is not None else ())
    block = payload.get("content_block")
    return _strings(block, _START_TEXT) if isinstance(block, dict) else []


def _strings(fields: dict[str, Any], names: tuple[str, ...]) -> list[str]:
    return [value for name in names if isinstance(value := fields.get(name), str) and value]
