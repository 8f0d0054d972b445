"""Claude Code, unchanged, does a tool-using task through messagegate on either kind of upstream."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from conftest import GATEWAY_KEY, PROVIDER_KEY
from e2e.claude_run import MAIN_MODEL, SMALL_MODEL, Auth, ClaudeRun, claude_env, run_claude
from e2e.conftest import Workspace
from e2e.fake_model import FINAL_TEXT, Dialect, FakeModel, ToolCall, Turn
from fakes.gateway import build_config, running_gateway
from fakes.upstream import FakeUpstream
from messagegate.config import Config

pytestmark = pytest.mark.e2e

DIALECTS: list[Dialect] = ["openai", "anthropic"]
MAIN_UPSTREAM = "main-upstream-model"
SMALL_UPSTREAM = "small-upstream-model"
TASK = "Create notes/hello.txt with the agreed greeting."
# Exactly these bytes must end up in the file: several lines, non-ASCII, a trailing newline.
CONTENT = "Hello from Claude Code, through messagegate.\nZweite Zeile: grüße ✓\n"


def _provider(dialect: Dialect, fake: FakeUpstream) -> dict[str, Any]:
    base_url = fake.url if dialect == "anthropic" else fake.url + "/v1"
    return {"kind": dialect, "base_url": base_url, "api_key": PROVIDER_KEY}


def _config(main: tuple[Dialect, FakeUpstream], small: tuple[Dialect, FakeUpstream]) -> Config:
    """The gateway: Claude Code's main model on provider `main`, its small model on `small`."""
    providers = {"main": _provider(*main)}
    if small[1] is not main[1]:
        providers["small"] = _provider(*small)
    small_provider = "small" if "small" in providers else "main"
    return build_config(
        {
            "keys": [{"key": GATEWAY_KEY, "name": "claude-code"}],
            "providers": providers,
            "models": {
                MAIN_MODEL: {"routes": [{"provider": "main", "model": MAIN_UPSTREAM}]},
                SMALL_MODEL: {"routes": [{"provider": small_provider, "model": SMALL_UPSTREAM}]},
            },
        }
    )


def _write(workspace: Workspace) -> ToolCall:
    return ToolCall("Write", {"file_path": str(workspace.target), "content": CONTENT})


async def _run(
    claude: Path,
    config: Config,
    workspace: Workspace,
    auth: Auth = "x-api-key",
    tools: str = "Write",
) -> ClaudeRun:
    """One `claude -p` run against a gateway that lives for just that run."""
    async with running_gateway(config) as (url, _app):
        env = claude_env(url, GATEWAY_KEY, auth, workspace.home)
        return await run_claude(claude, env, workspace.workdir, TASK, tools)


def _assert_completed(run: ClaudeRun, workspace: Workspace) -> None:
    """The task is done: a success result with the final text, and the file byte for byte."""
    assert not run.is_error, run.describe()
    assert run.result.get("result") == FINAL_TEXT, run.describe()
    assert workspace.target.exists(), run.describe()
    assert workspace.target.read_bytes() == CONTENT.encode()


def _shape(turns: list[Turn]) -> list[tuple[bool, bool]]:
    """(streamed?, carries a tool result?) of each request, in order."""
    return [(turn.stream, turn.after_tool_result) for turn in turns]


def _assert_provider_key(fake: FakeUpstream, dialect: Dialect) -> None:
    """The upstream saw the provider's key, never the client's gateway key."""
    for received in fake.received:
        if dialect == "anthropic":
            assert received.headers.get("x-api-key") == PROVIDER_KEY
        else:
            assert received.headers.get("authorization") == f"Bearer {PROVIDER_KEY}"
        assert GATEWAY_KEY not in str(received.headers)


def _routes_logged(caplog: pytest.LogCaptureFixture) -> set[str]:
    """The `route=` of every access log line the gateway wrote."""
    lines = [r.getMessage() for r in caplog.records if r.name == "messagegate.access"]
    return {m.group(1) for line in lines if (m := re.search(r"\broute=(\S+)", line))}


@pytest.mark.parametrize("auth", ["x-api-key", "bearer"])
@pytest.mark.parametrize("dialect", DIALECTS)
async def test_claude_code_writes_a_file_through_the_gateway(
    claude: Path, workspace: Workspace, upstream: FakeUpstream, dialect: Dialect, auth: Auth
) -> None:
    model = FakeModel(upstream, dialect, {MAIN_UPSTREAM: _write(workspace)})
    config = _config((dialect, upstream), (dialect, upstream))
    run = await _run(claude, config, workspace, auth)
    _assert_completed(run, workspace)
    assert _shape(model.turns_of(MAIN_UPSTREAM)) == [(True, False), (True, True)]
    _assert_provider_key(upstream, dialect)


@pytest.mark.parametrize("dialect", DIALECTS)
async def test_a_stream_broken_mid_way_falls_back_to_non_streaming(
    claude: Path, workspace: Workspace, upstream: FakeUpstream, dialect: Dialect
) -> None:
    model = FakeModel(upstream, dialect, {MAIN_UPSTREAM: _write(workspace)})
    model.streams_to_break = 1
    run = await _run(claude, _config((dialect, upstream), (dialect, upstream)), workspace)
    _assert_completed(run, workspace)
    # The broken stream, Claude Code's retry without `stream`, then the tool-result turn.
    assert _shape(model.turns_of(MAIN_UPSTREAM)) == [(True, False), (False, False), (True, True)]


async def test_a_subagent_on_the_small_model_uses_its_own_route(
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
    main = FakeModel(upstream, "anthropic", {MAIN_UPSTREAM: delegate})
    small = FakeModel(second_upstream, "openai", {SMALL_UPSTREAM: _write(workspace)})
    config = _config(("anthropic", upstream), ("openai", second_upstream))
    run = await _run(claude, config, workspace, tools="Agent,Write")
    _assert_completed(run, workspace)
    assert _shape(main.turns_of(MAIN_UPSTREAM)) == [(True, False), (True, True)]
    assert _shape(small.turns_of(SMALL_UPSTREAM)) == [(True, False), (True, True)]
    routes = _routes_logged(caplog)
    assert {f"main/{MAIN_UPSTREAM}", f"small/{SMALL_UPSTREAM}"} <= routes, routes


@pytest.mark.parametrize("dialect", DIALECTS)
async def test_an_invalid_request_reaches_claude_code_as_a_final_400(
    claude: Path, workspace: Workspace, upstream: FakeUpstream, dialect: Dialect
) -> None:
    model = FakeModel(upstream, dialect, {MAIN_UPSTREAM: _write(workspace)})
    model.reject_status = 400
    run = await _run(claude, _config((dialect, upstream), (dialect, upstream)), workspace)
    assert run.is_error, run.describe()
    assert run.result.get("api_error_status") == 400, run.describe()
    # One request: neither the gateway nor Claude Code tried again.
    assert len(model.turns_of(MAIN_UPSTREAM)) == 1, model.turns
    assert not workspace.target.exists()
