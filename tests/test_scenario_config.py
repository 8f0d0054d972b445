"""The `scenarios:` contract: what a config may say, and errors that name the key path."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from helpers import readme_yaml
from messagegate.config import ConfigError, ScenarioConditions, parse_config

PROVIDERS = {"anth": {"kind": "anthropic", "base_url": "http://127.0.0.1:9"}}
MODELS = {"m": {"routes": [{"provider": "anth", "model": "up"}]}}


def parse(scenarios: Any, **extra: Any) -> Any:
    raw = {"providers": PROVIDERS, "models": MODELS, "scenarios": scenarios, **extra}
    return parse_config(raw, source="gw.yaml", environ={})


def test_every_condition_parses() -> None:
    when: dict[str, Any] = {
        "model": "claude-haiku-*",
        "thinking": "enabled",
        "thinking_budget_over": 10000,
        "effort": "max",
        "input_tokens_over": 60000,
        "session_input_tokens_over": 100000,
        "tools_include": "web_search_*",
        "has_image": True,
        "has_document": False,
        "tag": "explorer",
        "header": {"User-Agent": "claude-cli/*"},
        "key": "team-*",
    }
    [scenario] = parse([{"name": "all", "when": when, "use": "m"}]).scenarios
    assert scenario.when == ScenarioConditions(
        **(when | {"effort": ("max",), "tools_include": ("web_search_*",)})
        | {"header": {"user-agent": "claude-cli/*"}}
    )
    assert (scenario.use, scenario.on_error, scenario.python) == ("m", "skip", None)


def test_a_provider_slash_model_target_and_a_user_function() -> None:
    config = parse(
        [
            {"name": "direct", "when": {"model": "x"}, "use": "anth/claude-3-haiku"},
            {"name": "mine", "python": "scenario_hooks:pick_by_key", "on_error": "reject"},
        ]
    )
    direct, mine = config.scenarios
    assert direct.use == "anth/claude-3-haiku"
    assert mine.function is not None
    assert mine.function.__name__ == "pick_by_key"
    assert (mine.on_error, mine.timeout) == ("reject", 0.1)


def test_a_keys_own_list() -> None:
    keys = [{"key": "k", "name": "alice", "scenarios": [{"name": "a", "when": {}, "use": "m"}]}]
    config = parse(None, keys=keys)
    assert config.scenarios == ()
    assert [s.name for s in config.keys[0].scenarios] == ["a"]


@pytest.mark.parametrize(
    ("scenarios", "problem"),
    [
        ("fast", "scenarios: expected a list, got str"),
        ([{"when": {}, "use": "m"}], "scenarios.0.name: is required"),
        ([{"name": "a", "use": "m"}], "scenarios.0.when: is required"),
        ([{"name": "a", "when": {}}], "scenarios.0: needs exactly one of use:"),
        ([{"name": "a", "when": {}, "use": "nope"}], "scenarios.0.use: unknown model 'nope'"),
        ([{"name": "a", "when": {}, "use": "other/x"}], "scenarios.0.use: unknown model"),
        ([{"name": "a", "when": {"colour": 1}, "use": "m"}], "scenarios.0.when.colour: unknown"),
        ([{"name": "a", "when": {"thinking": "on"}, "use": "m"}], "expected 'enabled', 'adaptive'"),
        ([{"name": "a", "when": {"effort": ["huge"]}, "use": "m"}], "when.effort: expected some"),
        (
            [{"name": "a", "when": {"input_tokens_over": -1}, "use": "m"}],
            "when.input_tokens_over: must not be negative",
        ),
        ([{"name": "a", "when": {"header": ["x"]}, "use": "m"}], "when.header: expected a map"),
        ([{"name": "a", "python": "no_such_module_x:f"}], "scenarios.0.python: cannot import"),
        ([{"name": "a", "python": "scenario_hooks:absent"}], "has no function absent"),
        ([{"name": "a", "python": "scenario_hooks"}], "expected package.module:function"),
        ([{"name": "a", "python": "scenario_hooks:junk", "on_error": "die"}], "on_error"),
        ([{"name": "a", "python": "scenario_hooks:junk", "timeout": 60}], "at most 10"),
        (
            [{"name": "a", "when": {}, "use": "m"}, {"name": "a", "when": {}, "use": "m"}],
            "scenarios.1.name: duplicate scenario name 'a'",
        ),
    ],
)
def test_errors_name_the_key_path(scenarios: Any, problem: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse(scenarios)
    assert str(caught.value).startswith("gw.yaml: ")
    assert problem in str(caught.value)


def test_a_keys_scenario_target_is_checked_too() -> None:
    keys = [{"key": "k", "name": "a", "scenarios": [{"name": "s", "when": {}, "use": "zz"}]}]
    with pytest.raises(ConfigError, match=r"keys\.0\.scenarios\.0\.use: unknown model 'zz'"):
        parse(None, keys=keys)


def test_the_readme_example_parses(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    package = tmp_path / "my_routing"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "rules.py").write_text("def choose(request):\n    return None\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    example = yaml.safe_load(readme_yaml("scenarios-example"))
    route = [{"provider": "anth", "model": "up"}]
    models = {name: {"routes": route} for name in _targets(example["scenarios"])}
    raw = {"providers": PROVIDERS, "models": models, **example}
    config = parse_config(raw, source="README.md", environ={})
    names = [s.name for s in config.scenarios]
    assert names == ["background", "plan", "long-context", "search", "explorer", "mine"]
    assert config.scenarios[-1].function is not None


def _targets(scenarios: list[dict[str, Any]]) -> set[str]:
    return {s["use"] for s in scenarios if "use" in s}
