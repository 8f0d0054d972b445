"""Telemetry of the real ``messagegate serve`` process: metrics over workers, no secret anywhere."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import orjson
import pytest

import fakes.anthropic_script as script
from fakes.otlp import SERVER_KIND, Receiver, running_receiver
from fakes.served import Lines, free_port
from fakes.served import serving as served_gateway
from fakes.upstream import FakeUpstream, Received, Reply
from helpers import get, post
from test_cli import gateway_yaml, write
from test_metrics import total

CANARY_PROVIDER_KEY = "sk-canary-provider-4e1d9a"
CANARY_GATEWAY_KEY = "mg-canary-gateway-77b2c0"
CANARY_WRONG_KEY = "mg-canary-wrong-key-a51f"
CANARY_PROMPT = "canary prompt: the eagle lands at 0300 9c2e"
CANARY_ANSWER = "canary answer: the owl sings 51aa"
ENV = {"MG_KEY": CANARY_GATEWAY_KEY, "UPSTREAM_KEY": CANARY_PROVIDER_KEY}


@asynccontextmanager
async def serving(
    path: Path, *extra: str, env: dict[str, str] | None = None
) -> AsyncIterator[tuple[str, Lines]]:
    async with served_gateway("--config", str(path), *extra, env={**ENV, **(env or {})}) as served:
        yield served.url, served.log


def answer() -> dict[str, Any]:
    return script.message(
        [{"type": "text", "text": CANARY_ANSWER}], input_tokens=9, output_tokens=4
    )


@pytest.mark.parametrize("own_port", [False, True], ids=["api-port", "metrics-listen"])
async def test_one_scrape_covers_every_worker(
    tmp_path: Path, upstream: FakeUpstream, own_port: bool
) -> None:
    upstream.default = script.reply(answer())
    metrics_port = free_port()
    extra = {"metrics": {"listen": f"127.0.0.1:{metrics_port}"}} if own_port else {}
    path = write(tmp_path, gateway_yaml(upstream, **extra))
    body = {"model": "claude-test", "max_tokens": 5, "messages": [{"role": "user", "content": "x"}]}
    async with serving(path, "--workers", "2") as (url, log):
        # Each call opens its own connection, so both workers serve some of them.
        for _ in range(10):
            assert (await post(url, "/v1/messages", body, key=CANARY_GATEWAY_KEY))[0] == 200
        scraped = f"http://127.0.0.1:{metrics_port}" if own_port else url
        # A request is counted once its answer has left, so the last one may still be on its
        # way into the shared files when the client has it: wait (boundedly) for it.
        for _ in range(100):
            first = (await get(scraped, "/metrics", key=None))[2].decode()
            if total(first, "messagegate_requests_total", endpoint="/v1/messages") == 10:
                break
            await asyncio.sleep(0.02)
        scrapes = [(await get(scraped, "/metrics", key=None))[2].decode() for _ in range(6)]
    assert len(upstream.received) == 10
    for text in scrapes:
        assert total(text, "messagegate_requests_total", endpoint="/v1/messages") == 10
        assert total(text, "gen_ai_client_token_usage_sum", gen_ai_token_type="input") == 90
        assert total(text, "gen_ai_client_token_usage_sum", gen_ai_token_type="output") == 40
    assert log.text.count("Started server process") == 2


def fault(received: Received) -> Reply:
    """The upstream's answer, chosen by the request's `max_tokens` (the fault's number)."""
    faults = {
        1: script.reply(answer()),
        2: script.stream_reply(answer()),
        3: script.error_reply(500, "api_error", "internal"),
        4: script.error_reply(429, "rate_limit_error", "slow down", headers={"retry-after": "1"}),
        5: script.error_reply(401, "authentication_error", "invalid x-api-key"),
        6: Reply(chunks=script.stream_reply(answer()).chunks, drop_after=3),
        7: script.error_reply(400, "invalid_request_error", "bad request"),
        8: Reply(body=b"not json at all", headers={"content-type": "application/json"}),
        9: script.error_reply(529, "overloaded_error", "overloaded"),
    }
    return faults[orjson.loads(received.body)["max_tokens"]]


async def test_no_key_or_prompt_reaches_logs_spans_or_metrics_over_a_fault_matrix(
    tmp_path: Path, upstream: FakeUpstream
) -> None:
    with running_receiver() as receiver:
        await _fault_matrix(tmp_path, upstream, receiver)


async def _fault_matrix(tmp_path: Path, upstream: FakeUpstream, receiver: Receiver) -> None:
    upstream.responder = fault
    config = gateway_yaml(
        upstream, log_format="json", metrics={"key_labels": True}, otel={"enabled": True}
    )
    config["failover"] = {"attempts_per_route": 2, "backoff_initial": 0.0, "backoff_max": 0.0}
    path = write(tmp_path, config)
    messages = [{"role": "user", "content": CANARY_PROMPT}]
    seen: list[int] = []
    otlp = {"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": receiver.endpoint}
    async with serving(path, "--log-level", "debug", env=otlp) as (url, log):
        for number in range(1, 10):
            for stream in (False, True):
                body = {
                    "model": "claude-test",
                    "max_tokens": number,
                    "system": CANARY_PROMPT,
                    "messages": messages,
                    "stream": stream,
                }
                status, _, _ = await post(url, "/v1/messages", body, key=CANARY_GATEWAY_KEY)
                seen.append(status)
        broken = b'{"model": "claude-test", "messages": "' + CANARY_PROMPT.encode()
        seen.append((await post(url, "/v1/messages", broken, key=CANARY_GATEWAY_KEY))[0])
        body = {"model": "claude-test", "max_tokens": 1, "messages": messages}
        seen.append((await post(url, "/v1/messages", body, key=CANARY_WRONG_KEY))[0])
        bearer = {"authorization": f"Bearer {CANARY_WRONG_KEY}"}
        seen.append((await post(url, "/v1/messages", body, bearer, key=None))[0])
        unknown = body | {"model": "claude-nope"}
        seen.append((await post(url, "/v1/messages", unknown, key=CANARY_GATEWAY_KEY))[0])
        metrics = (await get(url, "/metrics", key=None))[2].decode()
    # The canaries were live: the upstream got the provider key and the prompt.
    assert {r.headers.get("x-api-key") for r in upstream.received} == {CANARY_PROVIDER_KEY}
    assert all(CANARY_PROMPT in r.body.decode() for r in upstream.received)
    assert {200, 400, 401, 404, 429, 500, 502, 529} <= set(seen), seen
    assert "stamina.retry_scheduled" in log.text  # the retries' own log records, formatted too
    lines = [line for line in log.text.splitlines() if line.startswith("{")]
    assert len([orjson.loads(line) for line in lines if '"messagegate.access"' in line]) == 23
    spans = b"".join(receiver.bodies).decode("latin-1")
    assert len([s for s in receiver.spans() if s.kind == SERVER_KIND]) == 23
    for canary in (CANARY_PROVIDER_KEY, CANARY_GATEWAY_KEY, CANARY_WRONG_KEY, CANARY_PROMPT):
        assert canary not in log.text, canary
        assert canary not in metrics, canary
        assert canary not in spans, canary
    for fragment in ("canary", "eagle", "owl", "Bearer"):
        assert fragment not in log.text + metrics + spans, fragment
    assert "alice" in metrics  # key names are labels (key_labels), key values never
    assert "claude-nope" not in metrics  # an unknown model is `other`
