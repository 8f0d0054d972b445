"""``log_format: json``: one JSON object per log line; the access line has a fixed schema.

The access object is built from typed fields only (method, path, status, the routing outcome,
token counts, a trace id that must look like one); no header or body is ever read, so no key
or prompt text can reach it whatever the log level. Its keys are always all present:

    time, level, logger, method, path, status, duration_ms, request_id, trace_id, key, model,
    provider, route, attempts, fallback_model, skipped, input_tokens, output_tokens,
    tokens_estimated, error, stream_error, disconnected
"""

from __future__ import annotations

import logging
import re
import time
from typing import Any, Protocol, cast

import orjson

ACCESS_LOGGER = "messagegate.access"
# The access line's fields beyond method, path, status, duration and ids, as the text line has them.
TEXT_FIELDS = (
    "key",
    "model",
    "provider",
    "route",
    "fallback_model",
    "skipped",
    "error",
    "stream_error",
    "disconnected",
)
# W3C trace context: version-traceid-parentid-flags, lower-case hex.
_TRACEPARENT = re.compile(r"[0-9a-f]{2}-([0-9a-f]{32})-[0-9a-f]{16}-[0-9a-f]{2}")


class Logged(Protocol):
    """What an access line reads of a request (``server.Exchange``)."""

    headers: dict[str, str]
    log_fields: dict[str, str]
    served: Any


class AccessFields:
    """The access line's last argument: the text line joins the fields, the JSON line reads
    them typed. Formatting happens in the logging call, while the request is still whole."""

    __slots__ = ("request",)

    def __init__(self, request: Logged) -> None:
        self.request = request

    def __str__(self) -> str:
        return printable(" ".join(f"{k}={v}" for k, v in self.request.log_fields.items()))

    def document(self) -> dict[str, Any]:
        fields = self.request.log_fields
        doc: dict[str, Any] = {name: fields.get(name) for name in TEXT_FIELDS}
        attempts = fields.get("attempts")
        doc["attempts"] = int(attempts) if attempts is not None else None
        # The request's span's (tracing on), else a client's well-formed traceparent's.
        doc["trace_id"] = fields.get("trace_id") or trace_id(
            self.request.headers.get("traceparent")
        )
        usage = getattr(self.request.served, "value", None)
        usage = getattr(usage, "usage", None)
        doc["input_tokens"] = None if usage is None else usage.input_tokens
        doc["output_tokens"] = None if usage is None else usage.output_tokens
        doc["tokens_estimated"] = None if usage is None else usage.estimated
        return doc


def printable(text: str) -> str:
    """`text` with its control characters escaped (``\\r``, ``\\n``, ``\\x1b``...): a decoded path
    or a model name holding CR/LF, written raw, would forge log lines."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def trace_id(traceparent: str | None) -> str | None:
    """The trace id of a well-formed ``traceparent`` header; anything else is not logged."""
    if traceparent is None:
        return None
    match = _TRACEPARENT.fullmatch(traceparent.strip())
    if match is None or match.group(1) == "0" * 32:
        return None
    return match.group(1)


class JsonFormatter(logging.Formatter):
    """One object per record; the timestamp is UTC ISO 8601, formatted once per second."""

    _second = -1
    _text = ""

    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "time": self._time(record),
            "level": record.levelname,
            "logger": record.name,
        }
        args = record.args
        if record.name == ACCESS_LOGGER and isinstance(args, tuple) and len(args) == 6:
            method, path, status, milliseconds, request_id, fields = args
            doc |= {
                "method": method,
                "path": path,
                "status": status,
                "duration_ms": round(cast(float, milliseconds), 3),
                "request_id": request_id,
            }
            if isinstance(fields, AccessFields):
                doc |= fields.document()
        else:
            doc["message"] = record.getMessage()
            if record.exc_info:
                doc["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(doc).decode()

    def _time(self, record: logging.LogRecord) -> str:
        second = int(record.created)
        if second != self._second:
            self._second = second
            self._text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        return f"{self._text}.{int(record.msecs):03d}Z"
