"""The pinned Claude Code CLI, installed from the npm registry once into a cache directory (by one
test worker at a time)."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from fakes.install_lock import LockTimeout, exclusive

# The version the shared fixtures were captured with; its npm package ships the native binary
# for each platform as an optional dependency (nothing is downloaded at run time), and it runs
# with Node 18 or newer (later versions require Node 22).
VERSION = "2.1.197"
PACKAGE = f"@anthropic-ai/claude-code@{VERSION}"
INSTALL_TIMEOUT = 600.0


class InstallError(Exception):
    """Claude Code could not be installed; the message says why and what to do."""


def cache_dir() -> Path:
    """Where this version is installed: $XDG_CACHE_HOME or ~/.cache, then messagegate-e2e/."""
    root = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(root) / "messagegate-e2e" / f"claude-code-{VERSION}"


def binary_in(prefix: Path) -> Path:
    """The `claude` executable npm links into a prefix."""
    return prefix / "node_modules" / ".bin" / "claude"


def ensure_claude() -> Path:
    """The installed `claude` binary of the pinned version, installing it first if need be."""
    prefix = cache_dir()
    if _works(binary_in(prefix)):
        return binary_in(prefix)
    lock = prefix.parent / f".{prefix.name}.lock"
    try:
        with exclusive(lock, within=INSTALL_TIMEOUT * 2):
            if not _works(binary_in(prefix)):  # another worker may have installed it meanwhile
                _install(prefix)
    except LockTimeout as error:
        raise InstallError(str(error)) from None
    return binary_in(prefix)


def _works(binary: Path) -> bool:
    """Does `binary --version` name the pinned version?"""
    if not binary.exists():
        return False
    try:
        done = subprocess.run(
            [str(binary), "--version"], capture_output=True, text=True, timeout=60, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.stdout.startswith(VERSION)


def _install(prefix: Path) -> None:
    """npm install into a fresh directory, then move it into place (no half-installed cache)."""
    npm = _required_tool("npm")
    _required_tool("node")
    prefix.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{prefix.name}-", dir=prefix.parent))
    command = [npm, "install", "--prefix", str(staging), "--no-audit", "--no-fund", PACKAGE]
    try:
        done = subprocess.run(
            command, capture_output=True, text=True, timeout=INSTALL_TIMEOUT, check=False
        )
    except subprocess.TimeoutExpired:
        shutil.rmtree(staging, ignore_errors=True)
        raise InstallError(f"`{' '.join(command)}` took over {INSTALL_TIMEOUT:.0f}s") from None
    if done.returncode == 0 and not _works(binary_in(staging)):
        _run_postinstall(staging)
    if done.returncode != 0 or not _works(binary_in(staging)):
        shutil.rmtree(staging, ignore_errors=True)
        raise InstallError(f"`{' '.join(command)}` failed:\n{done.stdout}\n{done.stderr}")
    shutil.rmtree(prefix, ignore_errors=True)
    staging.rename(prefix)


def _run_postinstall(prefix: Path) -> None:
    """Put the native binary in place when npm skipped install scripts (ignore-scripts=true)."""
    script = prefix / "node_modules" / "@anthropic-ai" / "claude-code" / "install.cjs"
    subprocess.run(
        [_required_tool("node"), str(script)],
        cwd=script.parent,
        capture_output=True,
        timeout=INSTALL_TIMEOUT,
        check=False,
    )


def _required_tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise InstallError(
            f"`{name}` is not on PATH: the end-to-end tests install Claude Code with npm "
            "and need Node.js 18+ and npm (apt-get install nodejs npm)"
        )
    return path
