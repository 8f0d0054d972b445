"""Bounded waits on subprocesses the tests start: until one answers /health, until it is gone
(its process group killed if it does not go in time)."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
from pathlib import Path

import aiohttp

# How long a process may take to answer /health after it was started.
READY_WITHIN = 60.0
POLL_EVERY = 0.1
STOP_WITHIN = 30.0


async def until_healthy(
    url: str, process: subprocess.Popen[bytes], log: Path, within: float = READY_WITHIN
) -> None:
    """Polls `url`/health until it answers 200; fails, quoting `log`, if the process exits first
    or `within` seconds pass."""
    timeout = aiohttp.ClientTimeout(total=2)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        for _ in range(int(within / POLL_EVERY)):
            assert process.poll() is None, f"exited {process.returncode}:\n{tail(log)}"
            try:
                async with session.get(url + "/health") as response:
                    if response.status == 200:
                        return
            except (aiohttp.ClientError, TimeoutError):
                pass
            await asyncio.sleep(POLL_EVERY)
    raise AssertionError(f"{url}/health did not answer 200 within {within} s:\n{tail(log)}")


async def stopped(
    process: subprocess.Popen[bytes], sig: signal.Signals, within: float = STOP_WITHIN
) -> int:
    """Sends `sig` to the process's group (it leads one) and waits for its exit code; kills the
    group if it has not exited within `within` seconds."""
    if process.poll() is None:
        os.killpg(process.pid, sig)
    try:
        return await asyncio.to_thread(process.wait, within)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        return await asyncio.to_thread(process.wait, within)


def tail(log: Path, lines: int = 40) -> str:
    try:
        return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])
    except FileNotFoundError:
        return "(no log)"
