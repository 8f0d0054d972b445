"""Running the Claude Code CLI non-interactively against a base URL, bounded by a timeout."""

from __future__ import annotations

import asyncio
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

Auth = Literal["x-api-key", "bearer"]

# The model names Claude Code is told to send; the gateway config serves exactly these.
MAIN_MODEL = "gw-main-model"
SMALL_MODEL = "gw-small-model"
RUN_TIMEOUT = 60.0

# No traffic but the API calls, no updates, no telemetry: the run needs loopback only.
QUIET_ENV = {
    "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
    "DISABLE_TELEMETRY": "1",
    "DISABLE_AUTOUPDATER": "1",
    "DISABLE_ERROR_REPORTING": "1",
}


@dataclass(frozen=True, slots=True)
class ClaudeRun:
    """How one `claude -p` run ended: its exit code, its JSON result, what it printed."""

    returncode: int
    result: dict[str, Any]
    stdout: str
    stderr: str

    @property
    def is_error(self) -> bool:
        return self.result.get("is_error") is not False or self.result.get("subtype") != "success"

    def describe(self) -> str:
        """Everything a failing assertion should show."""
        return (
            f"exit {self.returncode}\nstdout: {self.stdout[-4000:]}\nstderr: {self.stderr[-4000:]}"
        )


def claude_env(base_url: str, key: str, auth: Auth, home: Path) -> dict[str, str]:
    """A clean environment: the gateway, one credential, fixed model names, a throw-away HOME."""
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(home),
        "ANTHROPIC_BASE_URL": base_url,
        "ANTHROPIC_MODEL": MAIN_MODEL,
        "ANTHROPIC_SMALL_FAST_MODEL": SMALL_MODEL,
        "ANTHROPIC_DEFAULT_HAIKU_MODEL": SMALL_MODEL,
        **QUIET_ENV,
    }
    env["ANTHROPIC_API_KEY" if auth == "x-api-key" else "ANTHROPIC_AUTH_TOKEN"] = key
    return env


async def run_claude(
    binary: Path,
    env: dict[str, str],
    workdir: Path,
    prompt: str,
    allowed_tools: str,
) -> ClaudeRun:
    """`claude -p PROMPT --output-format json --allowedTools TOOLS` in `workdir`, awaited."""
    args = ["-p", prompt, "--output-format", "json", "--allowedTools", allowed_tools]
    out_path, err_path = workdir.parent / "claude.stdout", workdir.parent / "claude.stderr"
    with out_path.open("wb") as out, err_path.open("wb") as err:
        process = await asyncio.create_subprocess_exec(
            str(binary),
            *args,
            cwd=workdir,
            env=env,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=out,
            stderr=err,
        )
        returncode = await _wait(process)
    stdout, stderr = out_path.read_text(errors="replace"), err_path.read_text(errors="replace")
    if returncode is None:
        raise AssertionError(
            f"Claude Code ran over {RUN_TIMEOUT:.0f}s (it retries 401, 429 and 5xx answers for"
            f" minutes: see the access log)\nstdout: {stdout}\nstderr: {stderr}"
        )
    return ClaudeRun(returncode, _json_result(stdout, stderr), stdout, stderr)


async def _wait(process: asyncio.subprocess.Process) -> int | None:
    """The exit code, or None after killing a process that ran over RUN_TIMEOUT."""
    try:
        async with asyncio.timeout(RUN_TIMEOUT):
            return await process.wait()
    except TimeoutError:
        process.kill()
        await process.wait()
        return None


def _json_result(stdout: str, stderr: str) -> dict[str, Any]:
    """The `--output-format json` object: the last line of stdout."""
    lines = [line for line in stdout.splitlines() if line.strip()]
    try:
        result = json.loads(lines[-1])
    except (IndexError, json.JSONDecodeError):
        raise AssertionError(f"no JSON result from Claude Code\n{stdout=}\n{stderr=}") from None
    if not isinstance(result, dict):
        raise AssertionError(f"unexpected JSON result from Claude Code: {stdout}")
    return result
