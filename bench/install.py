"""Installs what the bench needs outside the repo: wrk, LiteLLM's proxy, claude-code-router, py-spy.

Everything goes into a cache folder (``~/.cache/messagegate-bench``) at pinned versions, through
the ordinary clients (apt-get, pip, npm). Each function returns the tool, or a reason it cannot.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

CACHE = Path(os.environ.get("MG_BENCH_CACHE", Path.home() / ".cache" / "messagegate-bench"))
# 1.82.7 and 1.82.8 were the compromised PyPI releases (March 2026); 1.82.6 is the last version
# LiteLLM's maintainers confirmed clean, so it is pinned exactly.
LITELLM_VERSION = "1.82.6"
_COMPROMISED_LITELLM = ("1.82.7", "1.82.8")
# 3.1.1 depends on a package the npm registry does not serve; 2.0.0 ships as one bundled file.
CCR_VERSION = "2.0.0"
PY_SPY_VERSION = "0.4.3"
_INSTALL_TIMEOUT = 900
# Set inside the bench's own network namespace, where no registry can be reached.
NO_INSTALL = "MG_BENCH_NO_INSTALL"


@dataclass(frozen=True, slots=True)
class Tool:
    """An installed tool: the command to run it and its version, or why it is missing."""

    name: str
    command: tuple[str, ...] = ()
    version: str = ""
    missing: str = ""

    @property
    def ok(self) -> bool:
        return not self.missing


def _run(command: list[str], cwd: Path | None = None) -> str | None:
    """Run an install step; None when it worked, else the tail of its output."""
    if os.environ.get(NO_INSTALL):
        return f"not installed, and installing is off here ({' '.join(command[:3])})"
    try:
        done = subprocess.run(
            command, cwd=cwd, capture_output=True, text=True, timeout=_INSTALL_TIMEOUT, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"{' '.join(command[:3])}: {exc}"
    if done.returncode != 0:
        return f"{' '.join(command[:3])} failed: {(done.stdout + done.stderr)[-600:]}"
    return None


def wrk() -> Tool:
    found = shutil.which("wrk")
    if found is None and shutil.which("apt-get") is not None and os.geteuid() == 0:
        _run(["apt-get", "update", "-qq"])
        error = _run(["apt-get", "install", "-y", "-qq", "wrk"])
        if error:
            return Tool("wrk", missing=error)
        found = shutil.which("wrk")
    if found is None:
        return Tool("wrk", missing="wrk is not installed and apt-get cannot install it here")
    probe = subprocess.run([found, "--version"], capture_output=True, text=True, check=False)
    return Tool("wrk", (found,), (probe.stdout + probe.stderr).split("[")[0].strip())


def _venv(path: Path, requirement: str) -> str | None:
    python = path / "bin" / "python"
    if not python.exists():
        base = getattr(sys, "_base_executable", sys.executable)
        error = _run([base, "-m", "venv", str(path)])
        if error:
            return error
    return _run([str(python), "-m", "pip", "install", "--quiet", requirement])


def _installed_version(python: Path, package: str) -> str:
    code = f"import importlib.metadata as m; print(m.version({package!r}))"
    probe = subprocess.run([str(python), "-c", code], capture_output=True, text=True, check=False)
    return probe.stdout.strip()


def litellm() -> Tool:
    """LiteLLM's proxy in its own venv, at the pinned version, checked for the known payload."""
    venv = CACHE / "litellm-venv"
    python = venv / "bin" / "python"
    if not python.exists() or _installed_version(python, "litellm") != LITELLM_VERSION:
        error = _venv(venv, f"litellm[proxy]=={LITELLM_VERSION}")
        if error:
            return Tool("litellm", missing=error)
    version = _installed_version(python, "litellm")
    if version in _COMPROMISED_LITELLM or list(venv.glob("lib/python*/site-packages/*init.pth")):
        return Tool("litellm", missing=f"refusing litellm {version}: compromised release layout")
    return Tool("litellm", (str(venv / "bin" / "litellm"),), version)


def ccr() -> Tool:
    """claude-code-router from the npm registry, run with the machine's node."""
    node = shutil.which("node")
    if node is None or shutil.which("npm") is None:
        return Tool("ccr", missing="node and npm are not installed")
    prefix = CACHE / "ccr"
    package = prefix / "node_modules" / "@musistudio" / "claude-code-router"
    if _package_version(package) != CCR_VERSION:
        prefix.mkdir(parents=True, exist_ok=True)
        spec = f"@musistudio/claude-code-router@{CCR_VERSION}"
        error = _run(["npm", "install", "--prefix", str(prefix), "--no-audit", "--no-fund", spec])
        if error:
            return Tool("ccr", missing=error)
    cli = package / "dist" / "cli.js"
    if not cli.exists():
        return Tool("ccr", missing=f"{cli} is missing after npm install")
    node_version = subprocess.run([node, "--version"], capture_output=True, text=True).stdout
    return Tool("ccr", (node, str(cli)), f"{CCR_VERSION} (node {node_version.strip()})")


def _package_version(package: Path) -> str:
    try:
        return str(json.loads((package / "package.json").read_text())["version"])
    except (OSError, ValueError, KeyError):
        return ""


def py_spy() -> Tool:
    venv = CACHE / "tools-venv"
    binary = venv / "bin" / "py-spy"
    if (
        not binary.exists()
        or _installed_version(venv / "bin" / "python", "py-spy") != PY_SPY_VERSION
    ):
        error = _venv(venv, f"py-spy=={PY_SPY_VERSION}")
        if error:
            return Tool("py-spy", missing=error)
    return Tool("py-spy", (str(binary),), PY_SPY_VERSION)
