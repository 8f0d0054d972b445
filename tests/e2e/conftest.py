"""Fixtures of the end-to-end tests: the pinned Claude Code binary, a workspace for each run."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import pytest

from e2e.claude_install import InstallError, ensure_claude


@dataclass(frozen=True, slots=True)
class Workspace:
    """A throw-away HOME, the directory Claude Code works in, the file the task must create."""

    home: Path
    workdir: Path
    target: Path


@pytest.fixture(scope="session")
def claude() -> Path:
    """The Claude Code binary; a missing Node/npm or a failed install fails the test, loudly."""
    try:
        return ensure_claude()
    except InstallError as error:
        problem = str(error)
    pytest.fail(f"cannot install Claude Code: {problem}", pytrace=False)


@pytest.fixture
def workspace(tmp_path: Path) -> Workspace:
    """Fresh directories for one run; the target file does not exist yet."""
    home, workdir = tmp_path / "home", tmp_path / "work"
    home.mkdir()
    workdir.mkdir()
    return Workspace(home=home, workdir=workdir, target=workdir / "notes" / "hello.txt")


@pytest.fixture(autouse=True)
def access_log(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    """The gateway's access lines, shown with any failure (what Claude Code was answered)."""
    caplog.set_level(logging.INFO, logger="messagegate")
    return caplog
