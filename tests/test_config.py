"""The YAML config: README's example is valid and served; errors name the file and key path."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from conftest import SDK
from fakes.gateway import running_gateway
from helpers import readme_yaml
from messagegate.config import (
    DEFAULT_MAX_BODY_BYTES,
    ConfigError,
    Timeouts,
    load_config,
    parse_config,
)

README_ENV = {
    "MG_KEY": "mg-readme-key-1",
    "ANTHROPIC_API_KEY": "sk-ant-readme-secret",
    "MISTRAL_API_KEY": "mistral-readme-secret",
}


def minimal(**extra: Any) -> dict[str, Any]:
    raw: dict[str, Any] = {
        "providers": {"anth": {"kind": "anthropic", "base_url": "http://127.0.0.1:9"}},
        "models": {"m": {"routes": [{"provider": "anth", "model": "up"}]}},
    }
    raw.update(extra)
    return raw


def write(tmp_path: Path, raw: dict[str, Any] | str) -> Path:
    path = tmp_path / "gateway.yaml"
    path.write_text(raw if isinstance(raw, str) else yaml.safe_dump(raw))
    return path


def test_readme_example_parses_as_documented(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, readme_yaml("config-example")), environ=README_ENV)
    assert (config.host, config.port) == ("127.0.0.1", 8080)
    assert config.max_body_bytes == 32 * 1024 * 1024 == DEFAULT_MAX_BODY_BYTES
    assert [k.name for k in config.keys] == ["alice"]
    assert config.keys[0].key == README_ENV["MG_KEY"]
    anthropic, mistral = config.providers["anthropic"], config.providers["mistral"]
    assert (anthropic.kind, anthropic.base_url, anthropic.region) == (
        "anthropic",
        "https://api.anthropic.com",
        "us",
    )
    assert anthropic.api_key == README_ENV["ANTHROPIC_API_KEY"]
    assert anthropic.auth == "x-api-key"
    assert anthropic.timeouts == Timeouts()
    assert (mistral.kind, mistral.region, mistral.zero_data_retention) == ("openai", "eu", True)
    assert mistral.timeouts == Timeouts(connect=10, first_byte=300, idle=300, total=900)
    assert list(config.models) == ["claude-sonnet-4-5", "cheap-model"]
    sonnet = config.models["claude-sonnet-4-5"]
    assert [r.label for r in sonnet.routes] == ["anthropic/claude-sonnet-4-5-20250929"]
    assert sonnet.fallbacks == ("cheap-model",)


@pytest.mark.parametrize("block", ["config-example", "claude-code-config"])
async def test_readme_configs_serve_their_models(tmp_path: Path, sdk: SDK, block: str) -> None:
    text = readme_yaml(block)
    parsed = yaml.safe_load(text)
    written = [*parsed["models"], *(parsed.get("aliases") or {})]  # aliases listed after models
    config = load_config(write(tmp_path, text), environ=README_ENV)
    async with running_gateway(config) as (url, _):
        client = sdk(url, key=README_ENV["MG_KEY"])
        page = await client.models.list()
        retrieved = [await client.models.retrieve(name) for name in written]
    assert [m.id for m in page.data] == list(written)
    assert [m.id for m in retrieved] == list(written)
    assert all(m.type == "model" and m.display_name == m.id for m in page.data)
    names = list(written)
    assert (page.first_id, page.last_id, page.has_more) == (names[0], names[-1], False)


def test_secrets_never_show_in_reprs(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, readme_yaml("config-example")), environ=README_ENV)
    shown = repr(config)
    for secret in README_ENV.values():
        assert secret not in shown


def test_defaults(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, minimal()), environ={})
    assert (config.host, config.port) == ("127.0.0.1", 8080)
    assert config.keys == ()
    assert config.max_body_bytes == 32 * 1024 * 1024
    assert config.providers["anth"].timeouts == Timeouts(10, 300, 300, 900)
    assert config.providers["anth"].api_key is None
    assert config.shutdown_grace > 0


def test_on_outage_keys_defaults_to_fail_open() -> None:
    assert parse_config(minimal(), source="t", environ={}).on_outage.keys == "fail_open"
    chosen = parse_config(minimal(on_outage={"keys": "fail_closed"}), source="t", environ={})
    assert chosen.on_outage.keys == "fail_closed"


def test_partial_timeouts_keep_the_other_defaults() -> None:
    raw = minimal()
    raw["providers"]["anth"]["timeouts"] = {"first_byte": 5, "idle": 2.5}
    config = parse_config(raw, source="t.yaml", environ={})
    assert config.providers["anth"].timeouts == Timeouts(
        connect=10, first_byte=5, idle=2.5, total=900
    )


def test_env_vars_are_substituted_inside_strings() -> None:
    raw = minimal()
    raw["providers"]["anth"]["base_url"] = "http://${HOST}:${PORT}/"
    config = parse_config(raw, source="t.yaml", environ={"HOST": "10.0.0.1", "PORT": "81"})
    assert config.providers["anth"].base_url == "http://10.0.0.1:81"


INVALID = {
    "missing env var": (
        {"keys": [{"key": "${MG_KEY_UNSET}", "name": "a"}]},
        "keys.0.key: environment variable MG_KEY_UNSET is not set",
    ),
    "timeout wrong type": (
        {
            "providers": {
                "anth": {"kind": "anthropic", "base_url": "http://x", "timeouts": {"idle": "x"}}
            }
        },
        "providers.anth.timeouts.idle: expected float, got str",
    ),
    "timeout not positive": (
        {
            "providers": {
                "anth": {"kind": "anthropic", "base_url": "http://x", "timeouts": {"total": 0}}
            }
        },
        "providers.anth.timeouts.total: must be a positive number",
    ),
    "unknown timeout": (
        {
            "providers": {
                "anth": {"kind": "anthropic", "base_url": "http://x", "timeouts": {"read": 1}}
            }
        },
        "providers.anth.timeouts.read: unknown key",
    ),
    "max_body_bytes wrong type": (
        {"max_body_bytes": "big"},
        "max_body_bytes: expected int, got str",
    ),
    "max_body_bytes zero": ({"max_body_bytes": 0}, "max_body_bytes: must be a positive integer"),
    "bad listen": ({"listen": "localhost"}, "listen: expected HOST:PORT"),
    "unknown top key": ({"lissen": "x"}, "lissen: unknown key"),
    "bad kind": (
        {"providers": {"anth": {"kind": "gemini", "base_url": "http://x"}}},
        "providers.anth.kind: expected 'anthropic' or 'openai'",
    ),
    "missing base_url": (
        {"providers": {"anth": {"kind": "anthropic"}}},
        "providers.anth.base_url: is required",
    ),
    "keys not a list": ({"keys": {"key": "k"}}, "keys: expected a list"),
    "key without name": ({"keys": [{"key": "k"}]}, "keys.0.name: is required"),
    "unknown route provider": (
        {"models": {"m": {"routes": [{"provider": "nobody", "model": "x"}]}}},
        "models.m.routes.0.provider: unknown provider 'nobody'",
    ),
    "no routes": ({"models": {"m": {"routes": []}}}, "models.m.routes: expected a non-empty list"),
    "unknown fallback": (
        {"models": {"m": {"routes": [{"provider": "anth", "model": "x"}], "fallbacks": ["z"]}}},
        "models.m.fallbacks.0: unknown model 'z'",
    ),
    "unknown on_outage entry": (
        {"on_outage": {"keyz": "fail_open"}},
        "on_outage.keyz: unknown key",
    ),
    "bad on_outage.keys": (
        {"on_outage": {"keys": "fail_shut"}},
        "on_outage.keys: expected 'fail_open' or 'fail_closed', got 'fail_shut'",
    ),
    "quantized wrong type": (
        {"models": {"m": {"routes": [{"provider": "anth", "model": "x", "quantized": "no"}]}}},
        "models.m.routes.0.quantized: expected bool, got str",
    ),
}


@pytest.mark.parametrize(("override", "expected"), INVALID.values(), ids=INVALID.keys())
def test_invalid_config_names_file_and_key_path(
    tmp_path: Path, override: dict[str, Any], expected: str
) -> None:
    path = write(tmp_path, minimal(**override))
    with pytest.raises(ConfigError) as caught:
        load_config(path, environ={})
    assert str(caught.value).startswith(f"{path}: {expected}"), str(caught.value)


def test_unreadable_and_invalid_yaml_name_the_file(tmp_path: Path) -> None:
    missing = tmp_path / "absent.yaml"
    with pytest.raises(ConfigError, match=re.escape(f"{missing}: cannot read")):
        load_config(missing, environ={})
    broken = write(tmp_path, "providers: [unclosed\n")
    with pytest.raises(ConfigError, match=re.escape(f"{broken}: not valid YAML")):
        load_config(broken, environ={})
