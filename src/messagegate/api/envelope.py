"""Anthropic's error envelope: the one shape every error response and SSE error event takes."""

from __future__ import annotations

from typing import Any

import orjson


def error_payload(error_type: str, message: str) -> dict[str, Any]:
    return {"type": "error", "error": {"type": error_type, "message": message}}


def error_body(error_type: str, message: str) -> bytes:
    return orjson.dumps(error_payload(error_type, message))
