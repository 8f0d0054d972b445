"""A Debian package's program for the tests that drive one (Prometheus, nginx): found on PATH, or
installed with apt-get (as root, non-interactively) when it is missing."""

from __future__ import annotations

import os
import shutil
import subprocess

UPDATE_TIMEOUT = 900
INSTALL_TIMEOUT = 1800


def installed(program: str, package: str) -> str:
    """The path of `program`, installing Debian's `package` first when it is not on PATH."""
    found = shutil.which(program)
    if found is None:
        apt = shutil.which("apt-get")
        assert apt is not None, f"{program} is not installed and there is no apt-get"
        assert os.geteuid() == 0, f"{program} is not installed and apt-get needs root"
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run([apt, "update", "-q"], check=True, env=env, timeout=UPDATE_TIMEOUT)
        install = [apt, "install", "-y", "-q", "--no-install-recommends", package]
        subprocess.run(install, check=True, env=env, timeout=INSTALL_TIMEOUT)
        found = shutil.which(program)
    assert found is not None, f"apt-get installed {package}, but {program} is not on PATH"
    return found
