"""N `messagegate serve` replicas (one config file, each on its own free loopback port) behind
nginx: started with bounded waits for /health, one killed with SIGKILL and started again in the
same directory, all stopped (process groups killed if need be) even when the test fails."""

from __future__ import annotations

import asyncio
import signal
import subprocess
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from fakes.nginx import nginx_front
from fakes.served import COMMAND, base_env, free_port
from fakes.upstream import FakeUpstream
from fakes.waits import stopped, tail, until_healthy

# What the fake upstream's model costs, USD per million tokens: the ledger's cost column.
PRICE = {"input": 3, "output": 15}
ANSWERED = "POST /v1/messages 200 "


def shared_config(upstream: FakeUpstream, database: str, redis: str | None) -> dict[str, Any]:
    """Every replica's config: the shared database (and Redis), one Anthropic-native route."""
    route = {"provider": "anth", "model": "claude-upstream-1", "price": PRICE}
    return {
        "database": database,
        **({"redis": redis} if redis is not None else {}),
        "providers": {"anth": {"kind": "anthropic", "base_url": upstream.url, "api_key": "sk-x"}},
        "models": {"claude-test": {"routes": [route]}},
    }


def write_config(path: Path, config: dict[str, Any]) -> Path:
    path.write_bytes(orjson.dumps(config))  # YAML is a superset of JSON
    return path


@dataclass
class Replica:
    """One `messagegate serve` process. Its directory is its working directory and HOME, so that
    whatever it keeps locally (its journal, when that is not beside a database file) is found
    again by the process started after it was killed."""

    config: Path
    directory: Path
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None
    # Where the log of the latest start begins (a restart appends to the same file).
    log_start: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log(self) -> Path:
        return self.directory / "serve.log"

    async def start(self) -> None:
        assert self.process is None or self.process.poll() is not None, "already running"
        self.process = await asyncio.to_thread(self._spawn)
        await until_healthy(self.url, self.process, self.log)

    def _spawn(self) -> subprocess.Popen[bytes]:
        self.directory.mkdir(parents=True, exist_ok=True)
        self.log_start = self.log.stat().st_size if self.log.exists() else 0
        env = base_env() | {"HOME": str(self.directory), "XDG_DATA_HOME": str(self.directory)}
        command = [COMMAND, "serve", "--config", str(self.config), "--port", str(self.port)]
        with self.log.open("ab") as log:
            return subprocess.Popen(
                command,
                cwd=self.directory,
                env=env,
                stdout=log,
                stderr=log,
                start_new_session=True,  # a kill reaches anything it started
            )

    def answered(self) -> set[str]:
        """The request ids of the messages it answered 200 since its latest start (its access
        lines: `POST /v1/messages 200 <ms> <request id> ...`)."""
        with self.log.open("rb") as log:
            log.seek(self.log_start)
            lines = log.read().decode(errors="replace").splitlines()
        return {line.split(ANSWERED, 1)[1].split()[1] for line in lines if ANSWERED in line}

    async def kill(self) -> None:
        """SIGKILL, mid-whatever it is doing."""
        assert self.process is not None
        code = await stopped(self.process, signal.SIGKILL)
        assert code == -signal.SIGKILL, code

    async def stop(self) -> None:
        """A graceful stop (SIGTERM), which must exit 0."""
        assert self.process is not None
        code = await stopped(self.process, signal.SIGTERM)
        assert code == 0, f"exited {code}:\n{tail(self.log)}"


@dataclass
class Cluster:
    url: str  # nginx's
    replicas: Sequence[Replica]

    async def stop(self) -> None:
        await asyncio.gather(*(replica.stop() for replica in self.replicas))


@asynccontextmanager
async def cluster(
    nginx: str, config: Path, work: Path, replicas: int = 3
) -> AsyncIterator[Cluster]:
    """`replicas` gateways sharing `config`, behind nginx; yields once each answers /health."""
    members = [Replica(config, work / f"replica-{i}") for i in range(replicas)]
    try:
        async with asyncio.TaskGroup() as starting:
            for member in members:
                starting.create_task(member.start())
        async with nginx_front(nginx, [member.port for member in members], work / "nginx") as url:
            yield Cluster(url, members)
    finally:
        for member in members:
            if member.process is not None:
                await stopped(member.process, signal.SIGKILL)
