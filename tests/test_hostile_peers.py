"""Hostile clients and broken upstreams, on loopback: each is refused or reported, never obeyed."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from urllib.parse import urlsplit

import pytest

import fakes.anthropic_script as script
from conftest import GATEWAY_KEY
from fakes.gateway import build_config, running_gateway
from fakes.upstream import FakeUpstream, Reply
from helpers import anthropic_config, envelope, post
from messagegate.cli import main
from messagegate.config import ConfigError, load_config

HELLO = [{"role": "user", "content": "Hello"}]
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
    assert config.limits.max_json_depth == 128
    with pytest.raises(ConfigError, match=r"limits\.max_headers: must be a positive integer"):
        build_config(anthropic_config(upstream, limits={"max_headers": 0}))
    with pytest.raises(ConfigError, match=r"limits\.nope: unknown key"):
        build_config(anthropic_config(upstream, limits={"nope": 1}))
