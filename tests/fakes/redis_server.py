"""Redis for tests: the machine's shared server under a key prefix of one test's own (its keys
removed afterwards, nothing else), or a private `redis-server` on a free port a test may kill."""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import redis.asyncio as aioredis

from fakes.served import free_port

SHARED_URL = "redis://127.0.0.1:6379/0"


def unique_prefix() -> str:
    return f"mgtest-{os.urandom(6).hex()}"


@asynccontextmanager
async def shared_redis(prefix: str) -> AsyncIterator[aioredis.Redis]:
    """A client of the shared server; every key under `prefix` is deleted on the way out."""
    client = aioredis.Redis.from_url(SHARED_URL, socket_timeout=5)
    try:
        yield client
    finally:
        keys = [key async for key in client.scan_iter(match=f"{prefix}:*", count=500)]
        if keys:
            await client.delete(*keys)
        await client.aclose()


class PrivateRedis:
    """A redis-server of one test's own (no persistence), on a free loopback port."""

    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        self.process = await asyncio.create_subprocess_exec(
            "redis-server",
            *("--port", str(self.port), "--bind", "127.0.0.1", "--save", ""),
            *("--appendonly", "no"),
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )
        client = aioredis.Redis.from_url(self.url, socket_timeout=1)
        try:
            for _ in range(200):
                with contextlib.suppress(OSError, aioredis.ConnectionError):
                    if await client.ping():
                        return
                await asyncio.sleep(0.025)
            raise RuntimeError("redis-server did not start")
        finally:
            await client.aclose()

    async def kill(self) -> None:
        if self.process is not None and self.process.returncode is None:
            self.process.kill()
            await asyncio.wait_for(self.process.wait(), timeout=10)


@asynccontextmanager
async def private_redis() -> AsyncIterator[PrivateRedis]:
    server = PrivateRedis()
    await server.start()
    try:
        yield server
    finally:
        await server.kill()
