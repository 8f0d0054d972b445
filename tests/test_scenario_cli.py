"""`messagegate check` lists the scenarios; `messagegate explain` says which one a saved body
matches and why the others do not."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from conftest import claude_code_fixture
from test_cli import run

CONFIG: dict[str, Any] = {
    "keys": [
        {
            "key": "k-alice-0123",
            "name": "alice",
            "scenarios": [{"name": "alices-chores", "when": {"model": "gw-*"}, "use": "thinker"}],
        }
    ],
    "providers": {"us": {"kind": "anthropic", "base_url": "http://127.0.0.1:9"}},
    "models": {
        "claude-opus-4-8": {"routes": [{"provider": "us", "model": "up-main"}]},
        "cheap": {"routes": [{"provider": "us", "model": "up-cheap"}]},
        "thinker": {"routes": [{"provider": "us", "model": "up-thinker"}]},
    },
    "scenarios": [
        {"name": "background", "when": {"model": "gw-small-*"}, "use": "cheap"},
        {"name": "plan", "when": {"thinking": "enabled"}, "use": "thinker"},
        {"name": "pinned", "when": {"tag": "explorer"}, "use": "thinker"},
        {"name": "direct", "when": {"model": "nothing-*"}, "use": "us/explorer-1"},
        {"name": "mine", "python": "scenario_hooks:junk"},
    ],
}


def _files(tmp_path: Path, body: dict[str, Any]) -> tuple[str, str]:
    config = tmp_path / "gw.yaml"
    config.write_text(yaml.safe_dump(CONFIG, sort_keys=False))
    request = tmp_path / "request.json"
    request.write_text(json.dumps(body))
    return str(config), str(request)


def _env() -> dict[str, str]:
    # The user function's module lives in tests/.
    return {"PYTHONPATH": str(Path(__file__).parent)}


async def test_check_prints_the_scenarios(tmp_path: Path) -> None:
    config, _ = _files(tmp_path, {})
    code, out, err = await run("check", "--config", config, env=_env())
    assert code == 0, err
    assert "  background: model=gw-small-* -> cheap" in out
    assert "  plan: thinking=enabled -> thinker" in out
    assert "  direct: model=nothing-* -> us/explorer-1" in out
    assert "  mine: always -> python scenario_hooks:junk (on_error: skip)" in out
    assert "  [key alice] alices-chores: model=gw-* -> thinker" in out


async def test_explain_names_the_match_and_why_the_others_failed(tmp_path: Path) -> None:
    body = claude_code_fixture("messages_subagent_small_model")
    config, request = _files(tmp_path, body)
    code, out, err = await run("explain", "--config", config, request, env=_env())
    assert code == 0, err
    assert "request: model 'gw-small-model'" in out
    assert "  background: MATCHES: the request goes to cheap" in out
    assert "  plan: no: thinking is off, not enabled" in out
    assert "  pinned: no: tag is None, not 'explorer'" in out
    assert "  mine: failed: its function returned int, not a model name or None; skipped" in out
    assert "result: scenario 'background' chooses the model" in out

    code, out, err = await run("explain", "--config", config, "--key", "alice", request, env=_env())
    assert code == 0, err
    assert "result: scenario 'alices-chores' chooses the model" in out
    assert "  background: would match (cheap), but an earlier one won" in out


async def test_explain_sees_a_sub_agents_tag_and_a_non_match(tmp_path: Path) -> None:
    body = claude_code_fixture("messages_first_turn")
    body["system"][1]["text"] += "\n<messagegate-model>explorer</messagegate-model>"
    config, request = _files(tmp_path, body)
    code, out, err = await run("explain", "--config", config, request, env=_env())
    assert code == 0, err
    assert "tag 'explorer'" in out
    assert "  pinned: MATCHES: the request goes to thinker" in out

    body = claude_code_fixture("messages_first_turn")
    config, request = _files(tmp_path, body)
    code, out, err = await run("explain", "--config", config, request, env=_env())
    assert code == 0, err
    assert "result: no scenario matches; the request goes to 'claude-opus-4-8' as sent" in out


async def test_explain_of_an_unreadable_request_fails(tmp_path: Path) -> None:
    config, _ = _files(tmp_path, {})
    absent = str(tmp_path / "absent.json")
    code, _, err = await run("explain", "--config", config, absent, env=_env())
    assert code == 2
    assert "cannot read request" in err
