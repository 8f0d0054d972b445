"""README's Quick start: its two commands, and the first one run in a fresh clone of the repo.

The second command (the test suite) runs from a fresh clone in CI: `.ci/run` is that command.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import signal
import subprocess
from pathlib import Path
from typing import Any

import pytest

import fakes.anthropic_script as script
from conftest import PROVIDER_KEY
from fakes.served import Lines, free_port
from fakes.upstream import FakeUpstream
from helpers import first_text

ROOT = Path(__file__).resolve().parents[1]
# A fresh clone installs the project into its own .venv first.
INSTALL_SECONDS = 400


def quick_start_commands() -> list[str]:
    readme = (ROOT / "README.md").read_text()
    section = re.search(r"^## Quick start\n(.*?)^## ", readme, re.DOTALL | re.MULTILINE)
    assert section, "README.md has no ## Quick start section"
    blocks = re.findall(r"```(\w*)\n(.*?)```", section.group(1), re.DOTALL)
    assert [lang for lang, _ in blocks] == ["sh", "sh"]
    commands = [body.strip() for _, body in blocks]
    assert all("\n" not in command for command in commands)
    return commands


def test_quick_start_comes_first_with_two_commands_and_ci_runs_the_second() -> None:
    readme = (ROOT / "README.md").read_text()
    headings = re.findall(r"^## (.+)$", readme, re.MULTILINE)
    assert headings[0] == "Quick start"
    serve, test = quick_start_commands()
    ci_lines = [
        line.strip()
        for line in (ROOT / ".ci" / "run").read_text().splitlines()
        if line.strip() and not line.startswith(("#", "set ", "cd "))
    ]
    assert ci_lines == [test]
    assert serve.split()[0] == "scripts/serve"


def test_nothing_in_the_repo_reads_outside_it() -> None:
    tracked = subprocess.run(
        ["git", "ls-files", "src", "tests", "scripts", "bench", ".ci"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    outside = re.compile(r"\.\./shared|/work/shared|parents\[\d+\]\.parent\s*/\s*\"shared\"")
    offenders = [
        name
        for name in tracked
        if name != "tests/test_quick_start.py"
        and (ROOT / name).is_file()
        and outside.search((ROOT / name).read_text(errors="replace"))
    ]
    assert offenders == []


@pytest.fixture
def fresh_clone(tmp_path: Path) -> Path:
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.fail("the quick-start test needs git and a git checkout")
    clone = tmp_path / "messagegate"
    subprocess.run(
        ["git", "clone", "--quiet", "--no-hardlinks", str(ROOT), str(clone)],
        check=True,
        timeout=120,
    )
    return clone


async def test_the_first_command_starts_the_gateway_in_a_fresh_clone(
    fresh_clone: Path, upstream: FakeUpstream, sdk: Any
) -> None:
    serve, _ = quick_start_commands()
    port = free_port()
    keep = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "PIP_INDEX_URL", "PIP_EXTRA_INDEX_URL")
    env = {k: v for k, v in os.environ.items() if k in keep and k != "VIRTUAL_ENV"}
    # The clone must make its own .venv: no Python of this test's venv ahead on PATH.
    env["PATH"] = os.pathsep.join(
        p for p in env.get("PATH", "").split(os.pathsep) if not p.startswith(str(ROOT))
    )
    env |= {"ANTHROPIC_API_KEY": PROVIDER_KEY, "ANTHROPIC_BASE_URL": upstream.url}
    process = await asyncio.create_subprocess_exec(
        *serve.split(),
        "--port",
        str(port),
        cwd=fresh_clone,
        env=env,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
        start_new_session=True,
    )
    assert process.stderr is not None
    log = Lines(process.stderr)
    try:
        await log.wait_for("Uvicorn running on", within=INSTALL_SECONDS)
        upstream.default = script.reply(script.message([{"type": "text", "text": "fresh"}]))
        message = await sdk(f"http://127.0.0.1:{port}").messages.create(
            model="claude-sonnet-4-5", max_tokens=5, messages=[{"role": "user", "content": "hi"}]
        )
        os.killpg(process.pid, signal.SIGTERM)
        assert await asyncio.wait_for(process.wait(), timeout=30) == 0
    finally:
        if process.returncode is None:
            os.killpg(process.pid, signal.SIGKILL)
        await process.wait()
        await asyncio.wait_for(log.task, timeout=10)
    assert message.content[0].type == "text"
    assert first_text(message) == "fresh"
    assert upstream.received[0].json["model"] == "claude-sonnet-4-5"
    assert (fresh_clone / ".venv" / "bin" / "messagegate").exists()
