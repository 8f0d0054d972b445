"""Structured output: Anthropic's JSON-schema output format -> Chat Completions' response_format.

Anthropic takes ``output_config.format`` (and the older beta field ``output_format``);
OpenAI-compatible servers take ``response_format: {type: "json_schema", json_schema: {name,
schema, strict}}``. Strict mode is asked for only when the schema meets its rules (every object
closed, every property required), since a strict server rejects any other schema.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

_NAME = re.compile(r"[a-zA-Z0-9_-]{1,64}")
DEFAULT_NAME = "output"


def output_format(body: Mapping[str, Any]) -> dict[str, Any] | None:
    """The JSON-schema output format a request asks for, from either field; None without one."""
    output_config = body.get("output_config")
    fmt = output_config.get("format") if isinstance(output_config, dict) else None
    if fmt is None:
        fmt = body.get("output_format")
    return fmt if isinstance(fmt, dict) and fmt.get("type") == "json_schema" else None


def response_format(fmt: Mapping[str, Any]) -> dict[str, Any]:
    schema = fmt.get("schema")
    if not isinstance(schema, dict):
        schema = {}
    title = schema.get("title")
    name = title if isinstance(title, str) and _NAME.fullmatch(title) else DEFAULT_NAME
    json_schema = {"name": name, "schema": schema, "strict": strict_compatible(schema)}
    return {"type": "json_schema", "json_schema": json_schema}


def strict_compatible(schema: Any) -> bool:
    """Does every object in the schema forbid other properties and require all its own?"""
    if isinstance(schema, list):
        return all(strict_compatible(item) for item in schema)
    if not isinstance(schema, dict):
        return True
    properties = schema.get("properties")
    if schema.get("type") == "object" or isinstance(properties, dict):
        if schema.get("additionalProperties") is not False:
            return False
        if set(properties or {}) != set(schema.get("required") or ()):
            return False
    return all(
        strict_compatible(value) for value in schema.values() if isinstance(value, dict | list)
    )
