"""A real Prometheus server scrapes the gateway; PromQL sums equal what the upstream billed.

Prometheus is Debian's ``prometheus`` package: installed with apt-get when it is not on PATH.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from anthropic.types import MessageParam

import fakes.anthropic_script as script
from fakes.debian import installed
from fakes.gateway import build_config, running_gateway
from fakes.served import Lines, free_port
from fakes.upstream import FakeUpstream
from helpers import anthropic_config, post

HELLO: list[MessageParam] = [{"role": "user", "content": "Hello"}]
# What the fake upstream bills each request: input, output, cache reads, cache writes.
BILLS = [(120, 30, 0, 0), (40, 12, 900, 0), (15, 7, 300, 64), (3, 1, 0, 2048)]


@pytest.fixture(scope="session")
def prometheus_binary() -> str:
    return installed("prometheus", "prometheus")


@asynccontextmanager
async def prometheus(binary: str, tmp_path: Path, target: str) -> AsyncIterator[str]:
    """Prometheus on a free loopback port, scraping `target` (host:port) every second."""
    config = {
        "global": {"scrape_interval": "1s", "scrape_timeout": "1s"},
        "scrape_configs": [{"job_name": "messagegate", "static_configs": [{"targets": [target]}]}],
    }
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
    port = free_port()
    process = await asyncio.create_subprocess_exec(
        binary,
        f"--config.file={tmp_path / 'prometheus.yml'}",
        f"--storage.tsdb.path={tmp_path / 'data'}",
        f"--web.listen-address=127.0.0.1:{port}",
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    assert process.stderr is not None
    log = Lines(process.stderr)
    try:
        await log.wait_for("Server is ready to receive web requests", within=60)
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        await asyncio.wait_for(process.wait(), timeout=30)
        await asyncio.wait_for(log.task, timeout=30)


async def query(session: aiohttp.ClientSession, api: str, promql: str) -> list[dict[str, Any]]:
    async with session.get(f"{api}/api/v1/query", params={"query": promql}) as response:
        payload = await response.json()
    assert payload["status"] == "success", payload
    result: list[dict[str, Any]] = payload["data"]["result"]
    return result


async def query_until(api: str, promql: str, series: int) -> dict[str, float]:
    """The query's values by token type, once Prometheus has scraped (bounded: ~30 s)."""
    async with aiohttp.ClientSession() as session:
        for _ in range(300):
            result = await query(session, api, promql)
            if len(result) == series:
                return {
                    r["metric"].get("gen_ai_token_type", ""): float(r["value"][1]) for r in result
                }
            await asyncio.sleep(0.1)
    raise AssertionError(f"Prometheus never returned {series} series for {promql}")


def bill(input_tokens: int, output: int, cache_read: int, cache_write: int) -> dict[str, Any]:
    msg = script.message([{"type": "text", "text": "hi"}], input_tokens=input_tokens)
    msg["usage"] |= {
        "output_tokens": output,
        "cache_read_input_tokens": cache_read,
        "cache_creation_input_tokens": cache_write,
    }
    return msg


async def test_promql_token_sums_equal_what_the_upstream_billed(
    prometheus_binary: str, tmp_path: Path, upstream: FakeUpstream
) -> None:
    upstream.script(
        *(
            (script.stream_reply if i % 2 else script.reply)(bill(*billed))
            for i, billed in enumerate(BILLS)
        )
    )
    async with running_gateway(build_config(anthropic_config(upstream))) as (url, _):
        for i in range(len(BILLS)):
            body = {
                "model": "claude-test",
                "max_tokens": 50,
                "messages": HELLO,
                "stream": i % 2 == 1,
            }
            status, _, raw = await post(url, "/v1/messages", body)
            assert status == 200, raw
        target = url.removeprefix("http://")
        async with prometheus(prometheus_binary, tmp_path, target) as api:
            sums = await query_until(
                api, "sum by (gen_ai_token_type) (gen_ai_client_token_usage_sum)", 2
            )
            counts = await query_until(api, "sum(gen_ai_client_token_usage_count)", 1)
            async with aiohttp.ClientSession() as session:
                up = await query(session, api, 'up{job="messagegate"}')
                requests = await query(
                    session, api, 'sum(messagegate_requests_total{endpoint="/v1/messages"})'
                )
                buckets = await query(
                    session, api, 'count(gen_ai_server_request_duration_seconds_bucket{le="81.92"})'
                )
    assert len(upstream.received) == len(BILLS)
    # The convention's Anthropic page: input tokens include cache reads and writes.
    assert sums == {
        "input": sum(i + read + write for i, _, read, write in BILLS),
        "output": sum(output for _, output, _, _ in BILLS),
    }
    assert counts == {"": 2 * len(BILLS)}
    assert [float(r["value"][1]) for r in up] == [1.0]
    assert [float(r["value"][1]) for r in requests] == [len(BILLS)]
    assert [float(r["value"][1]) for r in buckets] == [1.0]
