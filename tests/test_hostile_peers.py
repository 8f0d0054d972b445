"""Hostile clients and broken upstreams, on loopback: each is refused or reported, never obeyed."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import anthropic
import pytest
import uvicorn
from anthropic.types import MessageParam, ToolParam

import fakes.anthropic_script as script
from conftest import GATEWAY_KEY, SDK
from fakes.gateway import build_config, running_gateway
from fakes.upstream import FakeUpstream, Reply
from helpers import anthropic_config, envelope, get, post, sse_events
from messagegate.cli import main
from messagegate.config import ConfigError, load_config
from messagegate.server.app import GatewayApp
from messagegate.server.http_protocol import HttpProtocol

HELLO: list[MessageParam] = [{"role": "user", "content": "Hello"}]
ANSWER = script.message([{"type": "text", "text": "Hi"}])


async def raw_exchange(url: str, request: bytes, *, limit: int = 1 << 20) -> bytes:
    """Send `request` as it is and read until the gateway closes the connection."""
    parts = urlsplit(url)
    reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
    try:
        writer.write(request)
        await writer.drain()
        async with asyncio.timeout(10):
            return await reader.read(limit) + await _rest(reader, limit)
    finally:
        writer.close()


async def _rest(reader: asyncio.StreamReader, limit: int) -> bytes:
    chunks = []
    for _ in range(1000):
        chunk = await reader.read(limit)
        if not chunk:
            break
        chunks.append(chunk)
    return b"".join(chunks)


def raw_post(path: str, body: bytes, *headers: str) -> bytes:
    lines = [
        f"POST {path} HTTP/1.1",
        "host: gateway",
        f"x-api-key: {GATEWAY_KEY}",
        "content-type: application/json",
        f"content-length: {len(body)}",
        "connection: close",
        *headers,
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


@pytest.mark.parametrize("path", ["/v1/messages", "/v1/messages/count_tokens"])
async def test_an_empty_messages_list_is_a_400(upstream: FakeUpstream, path: str) -> None:
    async with running_gateway(build_config(anthropic_config(upstream))) as (url, _):
        status, _, body = await post(
            url, path, {"model": "claude-test", "max_tokens": 5, "messages": []}
        )
    assert status == 400
    assert envelope(body) == ("invalid_request_error", "messages: at least one message is required")
    assert upstream.received == []


async def test_repeated_anthropic_beta_lines_are_joined_not_collapsed(
    upstream: FakeUpstream,
) -> None:
    upstream.script(script.reply(ANSWER))
    body = b'{"model":"claude-test","max_tokens":5,"messages":[{"role":"user","content":"hi"}]}'
    request = raw_post("/v1/messages", body, "anthropic-beta: beta-a", "anthropic-beta: beta-b")
    async with running_gateway(build_config(anthropic_config(upstream))) as (url, _):
        answer = await raw_exchange(url, request)
    assert answer.startswith(b"HTTP/1.1 200")
    assert upstream.received[0].headers["anthropic-beta"] == "beta-a, beta-b"


@pytest.mark.parametrize("status", [301, 307])
@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
async def test_a_redirect_is_reported_as_one(
    upstream: FakeUpstream, status: int, stream: bool
) -> None:
    moved = Reply(status=status, body=b"", headers={"location": "https://elsewhere.example/v1?t=1"})
    upstream.script(moved, moved)
    request = {"model": "claude-test", "max_tokens": 5, "messages": HELLO, "stream": stream}
    async with running_gateway(build_config(anthropic_config(upstream))) as (url, _):
        code, _, body = await post(url, "/v1/messages", request)
    assert code == 502
    error_type, message = envelope(body)
    assert error_type == "api_error"
    assert f"answered HTTP {status}, a redirect to https://elsewhere.example/v1;" in message
    assert "t=1" not in message
    assert len(upstream.received) == 2  # failed over (to the same, only route) before giving up


async def test_control_characters_in_the_path_and_model_are_escaped_in_the_access_log(
    upstream: FakeUpstream, caplog: pytest.LogCaptureFixture
) -> None:
    body = (
        b'{"model":"x\\r\\nFORGED 200","max_tokens":5,"messages":[{"role":"user","content":"h"}]}'
    )
    async with running_gateway(build_config(anthropic_config(upstream))) as (url, _):
        with caplog.at_level(logging.INFO, logger="messagegate.access"):
            await raw_exchange(
                url, b"GET /%0d%0aGET%20/forged HTTP/1.1\r\nconnection: close\r\n\r\n"
            )
            await raw_exchange(url, raw_post("/v1/messages", body))
    lines = [r.getMessage() for r in caplog.records if r.name == "messagegate.access"]
    assert len(lines) == 2
    assert all("\r" not in line and "\n" not in line for line in lines)
    assert "GET /\\r\\nGET /forged 404" in lines[0]
    assert "model=x\\r\\nFORGED 200" in lines[1]


def test_check_hides_credentials_in_a_base_url(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "gateway.yaml"
    path.write_text(
        "providers:\n"
        "  p: {kind: openai, base_url: 'https://user:s3cret-pass@llm.example/v1?api-key=s3cret-q'}\n"
        "models:\n"
        "  m: {routes: [{provider: p, model: x}]}\n"
    )
    assert main(["check", "--config", str(path)]) == 0
    out = capsys.readouterr().out
    assert "p: openai https://***@llm.example/v1?api-key=***" in out
    assert "s3cret" not in out


def test_a_yaml_syntax_error_does_not_echo_the_line_holding_a_key(tmp_path: Path) -> None:
    path = tmp_path / "gateway.yaml"
    path.write_text("providers:\n  p:\n    api_key: sk-s3cret: [\nmodels: {}\n")
    with pytest.raises(ConfigError) as raised:
        load_config(path)
    message = str(raised.value)
    assert "s3cret" not in message
    assert message.startswith(f"{path}: not valid YAML: ")
    assert "(line 3, column " in message


def test_limits_are_read_from_the_config_and_checked(upstream: FakeUpstream) -> None:
    config = build_config(anthropic_config(upstream, limits={"max_headers": 7, "body_timeout": 2}))
    assert (config.limits.max_headers, config.limits.body_timeout) == (7, 2.0)
    assert config.limits.max_header_bytes == 65536
    with pytest.raises(ConfigError, match=r"limits\.max_headers: must be a positive integer"):
        build_config(anthropic_config(upstream, limits={"max_headers": 0}))
    with pytest.raises(ConfigError, match=r"limits\.nope: unknown key"):
        build_config(anthropic_config(upstream, limits={"nope": 1}))


# -- client connections held to the limits -----------------------------------------------------

QUICK = {"header_timeout": 0.3, "body_timeout": 0.3}


async def connect(url: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    parts = urlsplit(url)
    return await asyncio.open_connection(parts.hostname, parts.port)


async def read_to_close(reader: asyncio.StreamReader) -> bytes:
    """All the gateway sends until it closes the connection (bounded)."""
    async with asyncio.timeout(10):
        return await _rest(reader, 1 << 16)


async def test_a_silent_connection_is_closed_after_the_header_timeout(
    upstream: FakeUpstream,
) -> None:
    async with running_gateway(build_config(anthropic_config(upstream, limits=QUICK))) as (url, _):
        silent_reader, silent = await connect(url)
        slow_reader, slow = await connect(url)
        slow.write(b"GET /health HTTP/1.1\r\nhost: x\r\n")  # and never the blank line
        assert await read_to_close(silent_reader) == b""
        answer = await read_to_close(slow_reader)
        silent.close()
        slow.close()
    assert answer.startswith(b"HTTP/1.1 408 ")
    assert envelope(answer.partition(b"\r\n\r\n")[2])[1] == (
        "the request head took longer than limits.header_timeout"
    )


async def test_a_body_that_stops_arriving_is_given_up(
    upstream: FakeUpstream, caplog: pytest.LogCaptureFixture
) -> None:
    async with running_gateway(build_config(anthropic_config(upstream, limits=QUICK))) as (url, _):
        reader, writer = await connect(url)
        with caplog.at_level(logging.INFO, logger="messagegate.access"):
            writer.write(raw_post("/v1/messages", b"x" * 100)[:-90])  # 10 bytes of 100
            assert await read_to_close(reader) == b""
            writer.close()
            # The request's task sees the client go and logs it (bounded wait for that line).
            for _ in range(100):
                if any("POST /v1/messages 499" in r.getMessage() for r in caplog.records):
                    break
                await asyncio.sleep(0.02)
    assert any("POST /v1/messages 499" in r.getMessage() for r in caplog.records)
    assert upstream.received == []


async def test_a_keep_alive_connection_is_still_served_after_a_slow_body_part(
    upstream: FakeUpstream,
) -> None:
    upstream.script(script.reply(ANSWER))
    body = b'{"model":"claude-test","max_tokens":5,"messages":[{"role":"user","content":"hi"}]}'
    async with running_gateway(build_config(anthropic_config(upstream, limits=QUICK))) as (url, _):
        reader, writer = await connect(url)
        request = raw_post("/v1/messages", body)
        writer.write(request[:-20])
        await asyncio.sleep(0.1)  # within body_timeout: a slow client, not a silent one
        writer.write(request[-20:])
        answer = await read_to_close(reader)
        writer.close()
    assert answer.startswith(b"HTTP/1.1 200 ")


async def test_connections_beyond_the_cap_are_closed_and_logged(
    upstream: FakeUpstream, caplog: pytest.LogCaptureFixture
) -> None:
    config = build_config(anthropic_config(upstream, limits={"max_connections": 2}))
    health = b"GET /health HTTP/1.1\r\nhost: x\r\n\r\n"
    async with running_gateway(config) as (url, _):
        kept = [await connect(url) for _ in range(2)]
        for reader, writer in kept:
            writer.write(health)
            assert (await reader.readuntil(b"}")).startswith(b"HTTP/1.1 200 ")
        with caplog.at_level(logging.WARNING, logger="messagegate.error"):
            reader, writer = await connect(url)
            writer.write(health)
            assert await read_to_close(reader) == b""
            writer.close()
        kept[0][1].close()
        await read_to_close(kept[0][0])
        # A place freed: the next connection is served (bounded retries while the close lands).
        for _ in range(100):
            status, _, _ = await get(url, "/health", key=None)
            if status == 200:
                break
        for _, writer in kept:
            writer.close()
    assert status == 200
    lines = [r.getMessage() for r in caplog.records if r.name == "messagegate.error"]
    assert any("the limit (limits.max_connections): closing new ones" in line for line in lines)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ([f"x-big: {'a' * 70_000}"], "the request head is larger than 65536 bytes"),
        ([f"x-h{i}: v" for i in range(101)], "the request has more than 100 headers"),
    ],
    ids=["size", "count"],
)
async def test_request_heads_over_the_limits_get_431(
    upstream: FakeUpstream, extra: list[str], message: str
) -> None:
    async with running_gateway(build_config(anthropic_config(upstream))) as (url, _):
        answer = await raw_exchange(url, raw_post("/v1/messages", b"{}", *extra))
    assert answer.startswith(b"HTTP/1.1 431 ")
    assert envelope(answer.partition(b"\r\n\r\n")[2]) == ("invalid_request_error", message)
    assert upstream.received == []


def nested(depth: int) -> Any:
    value: Any = {"type": "string"}
    for _ in range(depth - 1):
        value = {"type": "object", "properties": {"a": value}}
    return value


@pytest.mark.parametrize("path", ["/v1/messages", "/v1/messages/count_tokens"])
@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
async def test_json_nested_too_deep_is_a_400_before_any_upstream_call(
    upstream: FakeUpstream, path: str, stream: bool
) -> None:
    tool = {"name": "deep", "input_schema": nested(200)}  # 2 levels each: 400 deep
    request = {
        "model": "claude-test",
        "max_tokens": 5,
        "messages": HELLO,
        "tools": [tool],
        "stream": stream,
    }
    async with running_gateway(build_config(anthropic_config(upstream))) as (url, _):
        # The stdlib encodes what orjson won't (it stops at 254 levels).
        status, _, body = await post(url, path, json.dumps(request).encode())
    assert status == 400
    assert envelope(body) == (
        "invalid_request_error",
        "JSON nested deeper than 128 levels",
    )
    assert upstream.received == []


@pytest.mark.parametrize("endpoint", ["create", "count_tokens"])
async def test_a_tool_schema_nested_too_deep_is_refused_through_the_sdk(
    upstream: FakeUpstream, sdk: SDK, endpoint: str
) -> None:
    tool: ToolParam = {"name": "deep", "input_schema": nested(70)}  # 142 levels in all
    async with running_gateway(build_config(anthropic_config(upstream))) as (url, _):
        messages = sdk(url).messages
        call = (
            messages.create(model="claude-test", max_tokens=5, messages=HELLO, tools=[tool])
            if endpoint == "create"
            else messages.count_tokens(model="claude-test", messages=HELLO, tools=[tool])
        )
        with pytest.raises(anthropic.BadRequestError) as caught:
            await call
    assert caught.value.status_code == 400
    assert caught.value.body == {
        "type": "error",
        "error": {"type": "invalid_request_error", "message": "JSON nested deeper than 128 levels"},
    }
    assert upstream.received == []


def nested_lists(depth: int) -> Any:
    value: Any = []
    for _ in range(depth - 1):
        value = [value]
    return value


@pytest.mark.parametrize(("depth", "status"), [(128, 200), (129, 400)])
async def test_the_nesting_limit_counts_every_level(
    upstream: FakeUpstream, depth: int, status: int
) -> None:
    upstream.script(script.reply(ANSWER))
    # The request object is the first level; an unknown field passes through to Anthropic.
    request = {"model": "claude-test", "max_tokens": 5, "messages": HELLO}
    request["x_deep"] = nested_lists(depth - 1)
    async with running_gateway(build_config(anthropic_config(upstream))) as (url, _):
        answer, _, body = await post(url, "/v1/messages", json.dumps(request).encode())
    assert answer == status, body
    if status == 200:
        assert upstream.received[0].json["x_deep"] == request["x_deep"]
    else:
        assert envelope(body) == ("invalid_request_error", "JSON nested deeper than 128 levels")
        assert upstream.received == []


async def test_request_bodies_over_the_in_flight_budget_get_529(upstream: FakeUpstream) -> None:
    upstream.script(script.reply(ANSWER))
    config = build_config(anthropic_config(upstream, limits={"max_inflight_body_bytes": 400}))
    big = {
        "model": "claude-test",
        "max_tokens": 5,
        "messages": [{"role": "user", "content": "x" * 500}],
    }
    async with running_gateway(config) as (url, app):
        reader, writer = await connect(url)
        held = raw_post("/v1/messages", b"y" * 350)
        writer.write(held[:-100])  # a body being read holds its declared 350 bytes
        for _ in range(200):
            if app.body_budget.held:
                break
            await asyncio.sleep(0.01)
        status, _, body = await post(url, "/v1/messages", {**big, "messages": HELLO})
        writer.close()
        await read_to_close(reader)
        big_status, _, _ = await post(url, "/v1/messages", big)
        ok_status, _, _ = await post(url, "/v1/messages", {**big, "messages": HELLO})
    assert status == 529
    assert envelope(body)[0] == "overloaded_error"
    assert "limits.max_inflight_body_bytes" in envelope(body)[1]
    assert big_status == 529
    assert ok_status == 200
    assert app.body_budget.held == 0
    assert len(upstream.received) == 1


async def test_an_http_1_0_client_gets_the_stream_unchunked(upstream: FakeUpstream) -> None:
    upstream.script(script.stream_reply(ANSWER))
    body = b'{"model":"claude-test","max_tokens":5,"stream":true,'
    body += b'"messages":[{"role":"user","content":"hi"}]}'
    request = raw_post("/v1/messages", body).replace(b"HTTP/1.1", b"HTTP/1.0", 1)
    async with running_gateway(build_config(anthropic_config(upstream))) as (url, _):
        answer = await raw_exchange(url, request)
    head, _, sse = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 ")
    assert b"transfer-encoding" not in head.lower()
    assert b"connection: close" in head.lower()
    events = sse_events(sse)
    assert events[0][0] == "message_start"
    assert events[-1][0] == "message_stop"


async def test_requests_still_open_when_the_shutdown_grace_ends_get_an_error_not_a_traceback(
    upstream: FakeUpstream, caplog: pytest.LogCaptureFixture
) -> None:
    release = asyncio.Event()
    stalled = script.events(ANSWER)
    upstream.script(
        Reply(chunks=stalled, hold=release, hold_after=1),
        Reply(json=ANSWER, delay=30),
    )
    app = GatewayApp(build_config(anthropic_config(upstream)))
    server = uvicorn.Server(
        uvicorn.Config(
            app,
            host="127.0.0.1",
            port=0,
            http=HttpProtocol,
            log_level="warning",
            access_log=False,
            # uvicorn annotates an int but waits with asyncio.wait_for, which takes any float.
            timeout_graceful_shutdown=0.5,  # type: ignore[arg-type]
        )
    )
    # The process's Ctrl+C stays pytest's: the server under test takes no signals.
    server.capture_signals = contextlib.nullcontext  # type: ignore[method-assign, assignment]
    serving = asyncio.create_task(server.serve())
    for _ in range(500):
        if server.started:
            break
        await asyncio.sleep(0.01)
    url = f"http://127.0.0.1:{server.servers[0].sockets[0].getsockname()[1]}"
    request = {"model": "claude-test", "max_tokens": 5, "messages": HELLO}
    try:
        async with (
            aiohttp.ClientSession(headers={"x-api-key": GATEWAY_KEY}) as session,
            session.post(url + "/v1/messages", json={**request, "stream": True}) as streamed,
        ):
            first = await streamed.content.readuntil(b"\n\n")
            waiting = asyncio.create_task(session.post(url + "/v1/messages", json=request))
            for _ in range(500):
                if len(upstream.received) == 2:
                    break
                await asyncio.sleep(0.01)
            with caplog.at_level(logging.WARNING):
                server.should_exit = True
                rest = await asyncio.wait_for(streamed.read(), timeout=10)
                answered = await asyncio.wait_for(waiting, timeout=10)
                await asyncio.wait_for(serving, timeout=10)
            plain = await answered.read()
    finally:
        release.set()
    events = sse_events(first + rest)
    assert events[0][0] == "message_start"
    assert events[-1] == (
        "error",
        {
            "type": "error",
            "error": {
                "type": "overloaded_error",
                "message": "the gateway is shutting down; retry the request",
            },
        },
    )
    assert answered.status == 529
    assert envelope(plain) == (
        "overloaded_error",
        "the gateway is shutting down; retry the request",
    )
    assert not [r for r in caplog.records if r.exc_info], "a traceback was logged"
