"""The config's shape (config/schema.py): errors of any section name the key path msgspec found."""

from __future__ import annotations

import datetime
from dataclasses import fields
from typing import Any

import msgspec
import pytest

from messagegate.config import ConfigError, parse_config
from messagegate.config.dialect import DialectSwitches, OpenAIDialect

PROVIDERS = {"oai": {"kind": "openai", "base_url": "http://127.0.0.1:9"}}
MODELS = {"m": {"routes": [{"provider": "oai", "model": "up"}]}}


def problem(**sections: Any) -> str:
    raw = {"providers": PROVIDERS, "models": MODELS} | sections
    with pytest.raises(ConfigError) as caught:
        parse_config(raw, source="gw.yaml", environ={})
    return str(caught.value).removeprefix("gw.yaml: ")


@pytest.mark.parametrize(
    ("sections", "expected"),
    [
        (
            {"providers": {"oai": PROVIDERS["oai"] | {"max_connections": "x"}}},
            "providers.oai.max_connections: expected int, got str",
        ),
        (
            {"providers": {"ok": PROVIDERS["oai"], "bad": PROVIDERS["oai"] | {"weight": 0}}},
            "providers.bad.weight: must be a positive number",
        ),
        (
            {"providers": {"oai": PROVIDERS["oai"] | {"system_messages": "first"}}},
            "providers.oai.system_messages: expected 'anywhere' or 'leading_only', got 'first'",
        ),
        (
            {"models": {"m": {"routes": [{"provider": "oai", "model": "u", "price": {}}]}}},
            "models.m.routes.0.price.input: is required",
        ),
        (
            {"failover": {"attempts_per_route": 0}},
            "failover.attempts_per_route: must be a positive integer",
        ),
        ({"circuit_breaker": {"cooldown": -1}}, "circuit_breaker.cooldown: must be a positive"),
        ({"admin_key": "short"}, "admin_key: must be at least 16 characters"),
        ({"keys": [{"key": "", "name": "a"}]}, "keys.0.key: must not be empty"),
        ({"providers": None}, "providers: is required"),
        ({"routing_defaults": {"preference": "fast"}}, "routing_defaults.preference: expected"),
        ({"limits": {"max_headers": True}}, "limits.max_headers: expected int, got bool"),
    ],
)
def test_errors_name_the_key_path(sections: dict[str, Any], expected: str) -> None:
    assert problem(**sections).startswith(expected)


def test_an_unknown_key_lists_the_known_ones() -> None:
    assert problem(otel={"enabled": False, "sample": 1}) == (
        "otel.sample: unknown key (expected one of: capture_content, enabled)"
    )


def test_a_top_level_that_is_not_a_mapping() -> None:
    with pytest.raises(ConfigError, match=r"^gw\.yaml: <top>: expected a mapping, got a list$"):
        parse_config([], source="gw.yaml", environ={})


def test_yaml_dates_are_read_as_iso_text() -> None:
    created = datetime.datetime(2025, 3, 1, tzinfo=datetime.UTC)
    models = {"m": MODELS["m"] | {"created_at": created}}
    config = parse_config({"providers": PROVIDERS, "models": models}, source="gw.yaml", environ={})
    assert config.models["m"].created_at == "2025-03-01T00:00:00+00:00"


def test_every_dialect_field_is_a_provider_switch() -> None:
    assert {f.name for f in fields(OpenAIDialect)} == set(DialectSwitches.__struct_fields__)
    for name in DialectSwitches.__struct_fields__:
        value = getattr(OpenAIDialect(), name)
        assert msgspec.convert({name: value}, DialectSwitches).over(OpenAIDialect()) == (
            OpenAIDialect()
        )
