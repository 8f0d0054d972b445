"""Claude Code, unchanged, through a gateway whose background scenario sends every request on its
small/fast model to a second upstream; its main model's requests stay where they were."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from conftest import GATEWAY_KEY, PROVIDER_KEY
from e2e.claude_run import MAIN_MODEL, SMALL_MODEL, claude_env, run_claude
from e2e.conftest import Workspace
from e2e.fake_model import FINAL_TEXT, FakeModel, ToolCall
from e2e.test_claude_code import CONTENT, TASK
from fakes.gateway import build_config, running_gateway
from fakes.upstream import FakeUpstream

pytestmark = pytest.mark.e2e

MAIN_UPSTREAM = "main-upstream-model"
CHEAP_UPSTREAM = "cheap-upstream-model"


async def test_a_background_scenario_sends_the_small_model_to_a_second_upstream(
    claude: Path,
    workspace: Workspace,
    upstream: FakeUpstream,
    second_upstream: FakeUpstream,
    caplog: pytest.LogCaptureFixture,
) -> None:
    delegate = ToolCall(
        "Agent",
        {"description": "Write the greeting", "prompt": TASK, "subagent_type": "general-purpose"}
        | {"model": "haiku"},
    )
    write = ToolCall("Write", {"file_path": str(workspace.target), "content": CONTENT})
    main = FakeModel(upstream, "anthropic", {MAIN_UPSTREAM: delegate})
    cheap = FakeModel(second_upstream, "openai", {CHEAP_UPSTREAM: write})
    # The small model's name is not a configured model: only the scenario can serve it.
    config = build_config(
        {
            "keys": [{"key": GATEWAY_KEY, "name": "claude-code"}],
            "providers": {
                "main": {"kind": "anthropic", "base_url": upstream.url, "api_key": PROVIDER_KEY},
                "local": {
                    "kind": "openai",
                    "base_url": second_upstream.url + "/v1",
                    "api_key": PROVIDER_KEY,
                },
            },
            "models": {
                MAIN_MODEL: {"routes": [{"provider": "main", "model": MAIN_UPSTREAM}]},
                "cheap": {"routes": [{"provider": "local", "model": CHEAP_UPSTREAM}]},
            },
            "scenarios": [
                {"name": "background", "when": {"model": "gw-small-*"}, "use": "cheap"},
            ],
        }
    )
    async with running_gateway(config) as (url, _app):
        env = claude_env(url, GATEWAY_KEY, "x-api-key", workspace.home)
        run = await run_claude(claude, env, workspace.workdir, TASK, "Agent,Write")
    assert not run.is_error, run.describe()
    assert run.result.get("result") == FINAL_TEXT, run.describe()
    assert workspace.target.read_bytes() == CONTENT.encode()
    # The main turns stayed on the main upstream; the sub-agent's turns went to the cheap one.
    assert [t.stream for t in main.turns_of(MAIN_UPSTREAM)] == [True, True]
    assert len(cheap.turns_of(CHEAP_UPSTREAM)) >= 2
    assert {t.model for t in cheap.turns} == {CHEAP_UPSTREAM}
    assert {t.model for t in main.turns} == {MAIN_UPSTREAM}
    lines = [r.getMessage() for r in caplog.records if r.name == "messagegate.access"]
    routed = [line for line in lines if re.search(r"\bscenario=background\b", line)]
    assert routed, lines
    assert all(f"requested_model={SMALL_MODEL}" in line for line in routed)
    assert all("route=local/" + CHEAP_UPSTREAM in line for line in routed)
