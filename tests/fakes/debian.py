"""A Debian package's program for the tests that drive one (Prometheus, nginx, tshark): found on
PATH, or installed with apt-get (as root, non-interactively) when it is missing, one package at a
time across the test workers."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from fakes.install_lock import exclusive

UPDATE_TIMEOUT = 900
INSTALL_TIMEOUT = 1800
# Another worker's install (its update and install) is waited for, at most this long.
LOCK_WAIT = UPDATE_TIMEOUT + INSTALL_TIMEOUT
APT_LOCK = Path(tempfile.gettempdir()) / "messagegate-tests-apt.lock"


class InstallFailed(Exception):
    """The program is missing and apt-get could not install it; the message says why."""


def installed(program: str, package: str) -> str:
    """The path of `program`, installing Debian's `package` first when it is not on PATH."""
    found = shutil.which(program)
    if found is not None:
        return found
    with exclusive(APT_LOCK, within=LOCK_WAIT):
        found = shutil.which(program)  # another worker may have installed it meanwhile
        if found is None:
            _apt_install(program, package)
            found = shutil.which(program)
    if found is None:
        raise InstallFailed(f"apt-get installed {package}, but {program} is not on PATH")
    return found


def _apt_install(program: str, package: str) -> None:
    apt = shutil.which("apt-get")
    if apt is None:
        raise InstallFailed(f"{program} is not installed and there is no apt-get")
    if os.geteuid() != 0:
        raise InstallFailed(f"{program} is not installed and apt-get needs root")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    steps = (
        ([apt, "update", "-q"], UPDATE_TIMEOUT),
        ([apt, "install", "-y", "-q", "--no-install-recommends", package], INSTALL_TIMEOUT),
    )
    for command, timeout in steps:
        done = subprocess.run(
            command, env=env, capture_output=True, text=True, timeout=timeout, check=False
        )
        if done.returncode != 0:
            raise InstallFailed(f"`{' '.join(command)}` failed: {done.stderr[-2000:]}")
