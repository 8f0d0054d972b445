"""The Anthropic-native dialect: the upstream body, and the relay of its event stream."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import orjson

from messagegate.api.sse import encode_raw_event
from messagegate.api.usage import Usage
from messagegate.config.routing_fields import ROUTING_FIELDS
from messagegate.errors import UpstreamProtocolError, UpstreamStatusError
from messagegate.translate.signatures import is_gateway_signature
from messagegate.translate.sse_decoder import ServerSentEvent, new_event
from messagegate.translate.stream_relay import DEFAULT_MAX_EVENT, SSERelay


def to_anthropic_body(body: Mapping[str, Any], upstream_model: str) -> dict[str, Any]:
    """The client's body with the upstream model, minus routing fields and foreign thinking."""
    out = {k: v for k, v in body.items() if k not in ROUTING_FIELDS}
    out["model"] = upstream_model
    messages = body.get("messages")
    if isinstance(messages, list) and any(_has_foreign_thinking(m) for m in messages):
        out["messages"] = [_without_foreign_thinking(m) for m in messages]
    return out


def _is_foreign_thinking(block: Any) -> bool:
    """Thinking Anthropic did not sign (another provider's reasoning) would be rejected by it."""
    if not isinstance(block, dict) or block.get("type") != "thinking":
        return False
    signature = block.get("signature")
    return not signature or is_gateway_signature(signature)


def _has_foreign_thinking(message: Any) -> bool:
    content = message.get("content") if isinstance(message, dict) else None
    return isinstance(content, list) and any(_is_foreign_thinking(b) for b in content)


def _without_foreign_thinking(message: dict[str, Any]) -> dict[str, Any]:
    if not _has_foreign_thinking(message):
        return message
    return {**message, "content": [b for b in message["content"] if not _is_foreign_thinking(b)]}


def with_client_model(raw: bytes, client_model: str) -> dict[str, Any]:
    """A non-streaming answer, naming the model the client asked for."""
    message: dict[str, Any] = orjson.loads(raw)
    message["model"] = client_model
    return message


# Events the relay passes on unchanged: ``event: NAME`` then one ``data: `` line.
_VERBATIM_PREFIXES = (
    b"event: content_block_delta\ndata: ",
    b"event: content_block_start\ndata: ",
    b"event: content_block_stop\ndata: ",
    b"event: ping\ndata: ",
)


def anthropic_stream(
    client_model: str,
    scrub: Callable[[str], str] | None = None,
    max_event: int = DEFAULT_MAX_EVENT,
    encoding: str = "o200k_base",
) -> SSERelay:
    """The relay of an Anthropic upstream's stream, for a client that asked for `client_model`."""
    return SSERelay(AnthropicEventConverter(client_model, scrub), max_event, encoding)


class AnthropicEventConverter:
    """Passes Anthropic events through unchanged, but for the model name; records usage."""

    def __init__(self, client_model: str, scrub: Callable[[str], str] | None = None) -> None:
        self.client_model = client_model
        # Takes the gateway's secrets out of an upstream's `error` event.
        self.scrub = scrub
        self.usage = Usage()
        self._finished = False

    def convert(self, event: ServerSentEvent) -> bytes:
        try:
            return self._convert(event)
        except (orjson.JSONDecodeError, AttributeError):
            raise UpstreamProtocolError(
                f"the upstream sent an unreadable {event.event!r} event"
            ) from None

    def whole_event(self, event: bytes) -> bytes | None:
        """The client bytes of one event in the usual form (an ``event:`` and a ``data:`` line),
        without the decoder: content-block and ping events pass byte for byte, the others are
        relayed as ``convert`` relays them."""
        # Two lines, then the blank one: a chunk of several events is refused at its second.
        line_end = event.find(b"\n")
        if not event.startswith(b"event: ") or event.find(b"\n", line_end + 1) != len(event) - 2:
            return None
        if event.startswith(_VERBATIM_PREFIXES):
            return event
        name, separator, data = event[:-2].partition(b"\ndata: ")
        if not separator:
            return None
        return self.convert(new_event(name[7:].decode(), data.decode()))

    # Every usual event passes byte for byte: the whole-event test is the cheapest there is.
    usual_event = whole_event

    def whole_run(self, chunk: bytes, start: int) -> tuple[bytes, int]:
        """The events at `start` of a chunk of whole events that pass byte for byte, as one
        slice of it, and where they end."""
        end = start
        while chunk.startswith(_VERBATIM_PREFIXES, end):
            # The prefix holds the event line; the data line must end with the blank line.
            data_end = chunk.find(b"\n", chunk.find(b"\n", end) + 1)
            if data_end < 0 or chunk[data_end + 1 : data_end + 2] != b"\n":
                break
            end = data_end + 2
        return chunk[start:end], end

    def _convert(self, event: ServerSentEvent) -> bytes:
        name = event.event
        if name == "message_start":
            return self._message_start(event.data)
        if name == "message_delta":
            self._record_usage(orjson.loads(event.data).get("usage"))
        elif name in ("message_stop", "error"):
            self._finished = True
            if name == "error" and self.scrub is not None:
                return encode_raw_event(name, self.scrub(event.data))
        return encode_raw_event(name, event.data)

    def finish(self) -> bytes:
        if not self._finished:
            raise UpstreamProtocolError("the upstream stream ended before message_stop")
        return b""

    def _message_start(self, data: str) -> bytes:
        payload = orjson.loads(data)
        message = payload.get("message")
        if isinstance(message, dict):
            message["model"] = self.client_model
            self._record_usage(message.get("usage"))
        return b"event: message_start\ndata: " + orjson.dumps(payload) + b"\n\n"

    def _record_usage(self, usage: Any) -> None:
        if isinstance(usage, dict):
            self.usage.update(usage)


def classify_anthropic_error(
    status: int, body: bytes, retry_after: str | None, provider: str
) -> UpstreamStatusError:
    """An Anthropic error answer: relayed as it is, but for statuses the client must not see."""
    if status in (401, 403):
        return UpstreamStatusError(
            f"provider {provider!r} rejected the gateway's credentials",
            status=502,
            error_type="api_error",
            upstream_status=status,
            retryable=True,
        )
    error_type, message = _error_fields(body)
    client_status = 529 if status == 503 else status
    if status == 503:
        error_type = "overloaded_error"
    error = UpstreamStatusError(
        message or f"provider {provider!r} answered HTTP {status}",
        status=client_status,
        error_type=error_type or "api_error",
        upstream_status=status,
        retryable=status in _RETRYABLE or status >= 500,
        retry_after=retry_after,
    )
    if status != 503 and error_type:
        error.body = body
    return error


_RETRYABLE = frozenset({408, 429, 529})


def _error_fields(body: bytes) -> tuple[str | None, str | None]:
    try:
        payload = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None, None
    error = payload.get("error") if isinstance(payload, dict) else None
    if not isinstance(error, dict):
        return None, None
    error_type, message = error.get("type"), error.get("message")
    return (
        error_type if isinstance(error_type, str) else None,
        message if isinstance(message, str) else None,
    )
