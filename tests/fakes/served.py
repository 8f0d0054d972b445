"""The real ``messagegate`` command in a subprocess: its output read line by line, a free loopback
port, and ``serving``, which starts ``messagegate serve``, waits until it listens and stops it."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import socket
import sys
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

COMMAND = str(Path(sys.executable).with_name("messagegate"))
# uvicorn binds a single process's port after the app's startup, and says so with this line.
LISTENING = "Uvicorn running on"


def base_env() -> dict[str, str]:
    """The environment a subprocess gets: enough to run, no provider or gateway variables."""
    keep = ("PATH", "HOME", "LANG", "LC_ALL", "SYSTEMROOT", "VIRTUAL_ENV")
    return {k: v for k, v in os.environ.items() if k in keep}


class Lines:
    """Collects a stream's lines; waits (boundedly) for one matching a pattern."""

    def __init__(self, stream: asyncio.StreamReader) -> None:
        self.lines: list[str] = []
        self.changed = asyncio.Event()
        self.task = asyncio.create_task(self._read(stream))

    async def _read(self, stream: asyncio.StreamReader) -> None:
        async for line in stream:
            self.lines.append(line.decode().rstrip("\n"))
            self.changed.set()
        self.changed.set()

    async def wait_for(self, pattern: str, within: float = 10) -> str:
        async with asyncio.timeout(within):
            while True:
                for line in self.lines:
                    if re.search(pattern, line):
                        return line
                assert not self.task.done(), "\n".join(self.lines)
                self.changed.clear()
                await self.changed.wait()

    @property
    def text(self) -> str:
        return "\n".join(self.lines)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Served:
    url: str
    process: asyncio.subprocess.Process
    out: Lines
    log: Lines


@asynccontextmanager
async def serving(
    *args: str, env: Mapping[str, str], within: float = 30, stop: bool = True
) -> AsyncIterator[Served]:
    """``messagegate serve ARGS --port P`` with `env` over `base_env()`; yields once it listens.
    On the way out it gets SIGTERM and must exit 0 (`stop`), or is killed after a failure."""
    port = free_port()
    process = await asyncio.create_subprocess_exec(
        COMMAND,
        *("serve", *args, "--port", str(port)),
        env={**base_env(), **env},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        start_new_session=True,  # so that a failure can kill the workers too
    )
    assert process.stdout is not None
    assert process.stderr is not None
    out, log = Lines(process.stdout), Lines(process.stderr)
    try:
        # A worker's app is ready after the parent listens; a single process listens after it.
        await log.wait_for("Application startup complete", within=within)
        await log.wait_for(LISTENING, within=within)
        yield Served(f"http://127.0.0.1:{port}", process, out, log)
        if stop and process.returncode is None:
            process.send_signal(signal.SIGTERM)
            assert await asyncio.wait_for(process.wait(), timeout=30) == 0
    finally:
        if process.returncode is None:
            os.killpg(process.pid, signal.SIGKILL)
        await process.wait()
        await asyncio.wait_for(asyncio.gather(out.task, log.task), timeout=30)
