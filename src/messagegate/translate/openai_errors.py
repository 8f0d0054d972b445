"""OpenAI-style upstream error answers -> the gateway's UpstreamStatusError (pure)."""

from __future__ import annotations

from typing import Any

import orjson

from messagegate.errors import UpstreamStatusError

MAX_MESSAGE_LENGTH = 500

# upstream status -> (client status, Anthropic error type, retryable on another route)
_BY_STATUS: dict[int, tuple[int, str, bool]] = {
    400: (400, "invalid_request_error", False),
    422: (400, "invalid_request_error", False),
    # The provider refused the gateway's own key or account: another provider may still serve.
    401: (502, "api_error", True),
    402: (502, "api_error", True),
    403: (502, "api_error", True),
    404: (404, "not_found_error", False),
    408: (504, "timeout_error", True),
    413: (413, "request_too_large", False),
    429: (429, "rate_limit_error", True),
    500: (500, "api_error", True),
    503: (529, "overloaded_error", True),
    529: (529, "overloaded_error", True),
}
_KEY_REJECTED = frozenset({401, 403})
_HAS_RETRY_AFTER = frozenset({429, 503, 529})


def classify_openai_error(status: int, body: bytes, retry_after: str | None) -> UpstreamStatusError:
    """The client-facing error for an upstream's HTTP error answer."""
    client_status, error_type, retryable = _classify_status(status)
    if status in _KEY_REJECTED:
        # Never the upstream's own message: it may quote part of the key.
        message = f"the upstream provider rejected the gateway's API key (HTTP {status})"
    else:
        message = error_message(body) or f"the upstream provider answered HTTP {status}"
    return UpstreamStatusError(
        message,
        status=client_status,
        error_type=error_type,
        upstream_status=status,
        retryable=retryable,
        retry_after=retry_after if status in _HAS_RETRY_AFTER else None,
    )


def classify_error_object(chunk: dict[str, Any]) -> UpstreamStatusError:
    """The error an ``{"error": {...}}`` object (a stream chunk, or a 200 answer) stands for."""
    error = chunk.get("error")
    fields = error if isinstance(error, dict) else chunk
    status = _status_code(fields.get("code")) or _status_code(fields.get("status")) or 500
    return classify_openai_error(status, orjson.dumps(chunk), None)


def _classify_status(status: int) -> tuple[int, str, bool]:
    known = _BY_STATUS.get(status)
    if known is not None:
        return known
    if status >= 500:
        return 502, "api_error", True
    if status >= 400:
        return 400, "invalid_request_error", False
    return 502, "api_error", False


def _status_code(value: Any) -> int | None:
    if isinstance(value, str) and value.isdigit():
        value = int(value)
    if isinstance(value, int) and 400 <= value <= 599:
        return value
    return None


def error_message(body: bytes) -> str:
    """The message of an OpenAI, Mistral, vLLM or FastAPI error body, or the text itself."""
    try:
        payload = orjson.loads(body)
    except orjson.JSONDecodeError:
        return _truncate(body.decode(errors="replace").strip())
    return _truncate(_message_of(payload))


def _message_of(payload: Any) -> str:
    if isinstance(payload, str):
        return payload
    if isinstance(payload, dict):
        for key in ("error", "message", "detail"):
            if payload.get(key):
                return _message_of(payload[key])
        return ""
    return orjson.dumps(payload).decode() if payload else ""


def _truncate(text: str) -> str:
    if len(text) <= MAX_MESSAGE_LENGTH:
        return text
    return text[: MAX_MESSAGE_LENGTH - 1] + "…"
