"""A packet capture on loopback with tshark (installed with apt-get when missing)."""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from fakes.debian import InstallFailed, installed
from fakes.install_lock import LockTimeout

START_TIMEOUT = 30.0


class CaptureUnavailable(Exception):
    """tshark is missing and cannot be installed, or cannot capture here."""


def ensure_tshark() -> str:
    """tshark's path; Debian's package is installed (non-interactively) when it is missing."""
    try:
        return installed("tshark", "tshark")
    except (InstallFailed, LockTimeout, subprocess.TimeoutExpired) as error:
        raise CaptureUnavailable(str(error)) from None


@asynccontextmanager
async def capture(tshark: str, port: int, out: Path) -> AsyncIterator[Path]:
    """Capture TCP traffic to and from `port` on `lo` into `out` (pcap) while the block runs."""
    process = await asyncio.create_subprocess_exec(
        tshark,
        "-i",
        "lo",
        "-f",
        f"tcp port {port}",
        "-F",
        "pcap",
        "-w",
        str(out),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    assert process.stderr is not None
    seen = b""
    try:
        async with asyncio.timeout(START_TIMEOUT):
            while b"Capturing on" not in seen:
                line = await process.stderr.readline()
                if not line:
                    raise CaptureUnavailable(f"tshark did not start: {seen.decode()}")
                seen += line
        yield out
    finally:
        if process.returncode is None:
            process.terminate()
        await asyncio.wait_for(process.wait(), timeout=30)
