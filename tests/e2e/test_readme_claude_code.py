"""README's "Use with Claude Code" section: its config parses and matches the e2e runs."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from e2e.claude_run import MAIN_MODEL, SMALL_MODEL, claude_env
from fakes.gateway import build_config

README = Path(__file__).resolve().parents[2] / "README.md"
SECRETS = {"MG_KEY": "k", "ANTHROPIC_API_KEY": "a", "MISTRAL_API_KEY": "m"}


def _block(name: str) -> str:
    """The fenced block between `<!-- name:start -->` and `<!-- name:end -->`."""
    found = re.search(
        rf"<!-- {name}:start -->\n```\w+\n(.*?)```\n<!-- {name}:end -->", README.read_text(), re.S
    )
    assert found is not None, f"README.md has no {name} block"
    return found.group(1)


def _exports() -> dict[str, str]:
    """`export NAME=value` lines of the README's environment block."""
    pairs = re.findall(r"^export (\w+)=(\S+)", _block("claude-code-env"), re.M)
    return dict(pairs)


def test_the_readme_config_serves_the_models_claude_code_is_told_to_send() -> None:
    config = build_config(yaml.safe_load(_block("claude-code-config")), environ=SECRETS)
    exports = _exports()
    models = {exports["ANTHROPIC_MODEL"], exports["ANTHROPIC_DEFAULT_HAIKU_MODEL"]}
    assert models == {MAIN_MODEL, SMALL_MODEL}
    assert models <= set(config.models)
    assert exports["ANTHROPIC_SMALL_FAST_MODEL"] == exports["ANTHROPIC_DEFAULT_HAIKU_MODEL"]


def test_the_tests_run_claude_code_with_the_readme_environment() -> None:
    env = claude_env("http://127.0.0.1:1", "k", "x-api-key", Path("/nonexistent"))
    for name, value in _exports().items():
        if name.endswith("_MODEL") or name.startswith("CLAUDE_CODE_"):
            assert env[name] == value, name
