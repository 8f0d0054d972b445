"""Anthropic's JSON-schema output format becomes Chat Completions' response_format."""

from __future__ import annotations

from typing import Any

import pytest

from messagegate.config.dialect import OpenAIDialect
from messagegate.translate.openai_request import to_openai_request

CLOSED = {
    "type": "object",
    "properties": {
        "city": {"type": "string"},
        "tags": {"type": "array", "items": {"type": "string"}},
    },
    "required": ["city", "tags"],
    "additionalProperties": False,
}
OPEN = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
PARTLY_REQUIRED = CLOSED | {"required": ["city"]}
NESTED_OPEN = CLOSED | {"properties": {"city": OPEN}, "required": ["city"]}


def translated(**fields: Any) -> dict[str, Any]:
    body = {"model": "m", "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]}
    request = to_openai_request(body | fields, upstream_model="u", dialect=OpenAIDialect())
    return request.payload


@pytest.mark.parametrize("field", ["output_config", "output_format"])
def test_a_json_schema_format_becomes_a_strict_response_format(field: str) -> None:
    fmt = {"type": "json_schema", "schema": CLOSED}
    payload = translated(**({field: {"format": fmt}} if field == "output_config" else {field: fmt}))
    assert payload["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "output", "schema": CLOSED, "strict": True},
    }
    assert "output_config" not in payload
    assert "output_format" not in payload


@pytest.mark.parametrize("schema", [OPEN, PARTLY_REQUIRED, NESTED_OPEN])
def test_a_schema_strict_mode_would_reject_is_sent_without_strict(schema: dict[str, Any]) -> None:
    payload = translated(output_config={"format": {"type": "json_schema", "schema": schema}})
    assert payload["response_format"]["json_schema"]["strict"] is False
    assert payload["response_format"]["json_schema"]["schema"] == schema


def test_the_schemas_title_names_it_when_it_is_a_valid_name() -> None:
    fmt = {"type": "json_schema", "schema": CLOSED | {"title": "Weather_1"}}
    assert translated(output_format=fmt)["response_format"]["json_schema"]["name"] == "Weather_1"
    fmt = {"type": "json_schema", "schema": CLOSED | {"title": "the weather"}}
    assert translated(output_format=fmt)["response_format"]["json_schema"]["name"] == "output"


def test_without_a_json_schema_format_there_is_no_response_format() -> None:
    assert "response_format" not in translated()
    assert "response_format" not in translated(output_config={"effort": "low"})
