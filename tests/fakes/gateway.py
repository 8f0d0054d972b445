"""Running the real gateway app under uvicorn on a free loopback port, in the test's event loop."""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import uvicorn

from messagegate.config import BreakerPolicy, Config, FailoverPolicy, parse_config
from messagegate.server.app import GatewayApp
from messagegate.server.http_protocol import HttpProtocol

# Tests must never wait on real backoff: retries happen at once.
FAST_FAILOVER = FailoverPolicy(attempts_per_route=2, backoff_initial=0.0, backoff_max=0.0)


def build_config(raw: dict[str, Any], environ: dict[str, str] | None = None) -> Config:
    return parse_config(raw, source="test.yaml", environ=environ or {})


@asynccontextmanager
async def running_gateway(
    config: Config,
    *,
    failover: FailoverPolicy = FAST_FAILOVER,
    breaker: BreakerPolicy | None = None,
    clock: Any = None,
    http: Any = HttpProtocol,
    wall_clock: Any = None,
) -> AsyncIterator[tuple[str, GatewayApp]]:
    kwargs: dict[str, Any] = {"failover": failover, "breaker": breaker, "rng": random.Random(7)}
    if clock is not None:
        kwargs["clock"] = clock
    if wall_clock is not None:
        kwargs["wall_clock"] = wall_clock
    app = GatewayApp(config, **kwargs)
    async with running_server(
        app, http=http, log_level="warning", access_log=False, timeout_graceful_shutdown=2
    ) as url:
        yield url, app


@asynccontextmanager
async def running_server(app: Any, **options: Any) -> AsyncIterator[str]:
    """An ASGI app under uvicorn on a free loopback port in the test's loop; yields its URL."""
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, lifespan="on", **options))
    # The process's Ctrl+C stays pytest's: the server under test takes no signals.
    server.capture_signals = contextlib.nullcontext  # type: ignore[method-assign, assignment]
    task = asyncio.create_task(server.serve())
    for _ in range(500):
        if server.started or task.done():
            break
        await asyncio.sleep(0.01)
    if not server.started:
        server.should_exit = True
        await asyncio.wait_for(task, timeout=10)
        raise RuntimeError(f"{type(app).__name__} did not start")
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, timeout=10)
