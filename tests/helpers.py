"""Small helpers shared by gateway tests: configs, raw HTTP calls, SSE parsing of answers."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import aiohttp
import anthropic
import orjson
from anthropic.types import Message

from conftest import GATEWAY_KEY, PROVIDER_KEY
from fakes.upstream import FakeUpstream


def anthropic_config(upstream: FakeUpstream, **extra: Any) -> dict[str, Any]:
    """A gateway with one key and one Anthropic-native provider serving `claude-test`."""
    config: dict[str, Any] = {
        "keys": [{"key": GATEWAY_KEY, "name": "alice"}],
        "providers": {
            "anth": {"kind": "anthropic", "base_url": upstream.url, "api_key": PROVIDER_KEY}
        },
        "models": {"claude-test": {"routes": [{"provider": "anth", "model": "claude-upstream-1"}]}},
    }
    config.update(extra)
    return config


def openai_config(upstream: FakeUpstream, **provider: Any) -> dict[str, Any]:
    """A gateway with one key and one OpenAI-compatible provider serving `gpt-test`."""
    return {
        "keys": [{"key": GATEWAY_KEY, "name": "alice"}],
        "providers": {
            "oai": {
                "kind": "openai",
                "base_url": upstream.url + "/v1",
                "api_key": PROVIDER_KEY,
                **provider,
            }
        },
        "models": {"gpt-test": {"routes": [{"provider": "oai", "model": "gpt-upstream-1"}]}},
    }


async def post(
    base_url: str,
    path: str,
    body: bytes | Any,
    headers: dict[str, str] | None = None,
    key: str | None = GATEWAY_KEY,
) -> tuple[int, dict[str, str], bytes]:
    """A raw POST; returns status, lower-cased headers and the body."""
    raw = body if isinstance(body, bytes) else orjson.dumps(body)
    sent = {"content-type": "application/json", **(headers or {})}
    if key is not None:
        sent["x-api-key"] = key
    async with (
        aiohttp.ClientSession() as session,
        session.post(base_url + path, data=raw, headers=sent) as response,
    ):
        return response.status, _lower(response.headers), await response.read()


async def get(
    base_url: str,
    path: str,
    key: str | None = GATEWAY_KEY,
    method: str = "GET",
    headers: dict[str, str] | None = None,
) -> tuple[int, dict[str, str], bytes]:
    headers = dict(headers or {})
    if key is not None:
        headers["x-api-key"] = key
    async with (
        aiohttp.ClientSession() as session,
        session.request(method, base_url + path, headers=headers) as response,
    ):
        return response.status, _lower(response.headers), await response.read()


def _lower(headers: Any) -> dict[str, str]:
    return {k.lower(): v for k, v in headers.items()}


def sse_events(raw: bytes) -> list[tuple[str, dict[str, Any]]]:
    """(event, data) pairs of a complete SSE body."""
    events = []
    for block in raw.decode().split("\n\n"):
        if not block.strip():
            continue
        fields = dict(line.split(": ", 1) for line in block.split("\n") if ": " in line)
        events.append((fields["event"], orjson.loads(fields["data"])))
    return events


def envelope(raw: bytes) -> tuple[str, str]:
    """The (type, message) of an Anthropic error envelope; fails if the shape is wrong."""
    payload = orjson.loads(raw)
    assert payload["type"] == "error"
    assert set(payload["error"]) >= {"type", "message"}
    return payload["error"]["type"], payload["error"]["message"]


README = Path(__file__).resolve().parents[1] / "README.md"


def readme_yaml(name: str) -> str:
    """The YAML between README.md's ``<!-- name:start -->`` and ``<!-- name:end -->`` markers."""
    pattern = rf"<!-- {name}:start -->\s*```yaml\n(.*?)```\s*<!-- {name}:end -->"
    match = re.search(pattern, README.read_text(), re.DOTALL)
    assert match, f"README.md has no {name} block"
    return match.group(1)


def first_text(message: Message) -> str:
    """The text of an answer's first block, which the test expects to be a text block."""
    block = message.content[0]
    assert block.type == "text", block
    return block.text


def error_of(caught: anthropic.APIStatusError) -> dict[str, Any]:
    """The `error` object of the envelope the SDK parsed from an error answer."""
    body = caught.body
    assert isinstance(body, dict), body
    error: dict[str, Any] = body["error"]
    return error
