"""The five captured Claude Code requests reach the upstream as sent, but for model and key."""

from __future__ import annotations

import json
from typing import Any

import orjson
import pytest

import fakes.anthropic_script as script
from conftest import FIXTURES, GATEWAY_KEY, PROVIDER_KEY, claude_code_fixture, claude_code_headers
from fakes.gateway import build_config, running_gateway
from fakes.upstream import FakeUpstream, Reply
from helpers import anthropic_config, post, sse_events

CAPTURED = json.loads((FIXTURES / "requests.json").read_text())
MESSAGES = ["messages_first_turn", "messages_tool_result_turn", "messages_subagent_small_model"]
COUNTS = ["count_tokens_with_tools", "count_tokens_minimal"]
# The client-facing names Claude Code asked for, each routed to a differently named upstream model.
MODELS = {
    "claude-opus-4-8": "claude-opus-4-8-upstream",
    "gw-small-model": "small-upstream-model",
}
ANSWER = script.message(
    [
        {"type": "text", "text": "Let me look."},
        {"type": "tool_use", "id": "toolu_01X", "name": "Bash", "input": {"command": "ls"}},
    ],
    stop_reason="tool_use",
)


def fixture_config(upstream: FakeUpstream) -> dict[str, Any]:
    models = {
        name: {"routes": [{"provider": "anth", "model": upstream_model}]}
        for name, upstream_model in MODELS.items()
    }
    return anthropic_config(upstream, models=models)


def key_order(value: Any) -> Any:
    """Every object's keys in order, nested: equal results mean the same key order everywhere."""
    if isinstance(value, dict):
        return [(k, key_order(v)) for k, v in value.items()]
    if isinstance(value, list):
        return [key_order(v) for v in value]
    return None


async def send_captured(url: str, name: str, raw: bytes) -> tuple[int, dict[str, str], bytes]:
    capture = CAPTURED[name]
    query = "&".join(f"{k}={v}" for k, values in capture["query"].items() for v in values)
    headers = {**claude_code_headers(name), "x-api-key": GATEWAY_KEY}
    return await post(url, f"{capture['path']}?{query}", raw, headers=headers, key=None)


def check_upstream_request(upstream: FakeUpstream, name: str, sent: dict[str, Any]) -> None:
    capture = CAPTURED[name]
    (received,) = upstream.received
    expected = {**sent, "model": MODELS[sent["model"]]}
    assert received.path == capture["path"]
    assert received.query == {"beta": "true"}
    assert received.json == expected
    assert key_order(received.json) == key_order(expected)
    assert received.body == orjson.dumps(expected)
    assert received.headers["x-api-key"] == PROVIDER_KEY
    for header in ("anthropic-beta", "anthropic-version"):
        assert received.headers[header] == capture["headers"][header]


@pytest.mark.parametrize("name", MESSAGES)
@pytest.mark.parametrize("stream", [True, False], ids=["stream", "no-stream"])
async def test_captured_messages_request_passes_unchanged(
    upstream: FakeUpstream, name: str, stream: bool
) -> None:
    sent = claude_code_fixture(name)
    assert sent["stream"] is True
    if stream:
        raw = (FIXTURES / f"{name}.json").read_bytes()
        upstream.script(Reply(chunks=script.events(ANSWER)))
    else:
        sent["stream"] = False
        raw = json.dumps(sent, indent=1).encode()
        upstream.script(script.reply(ANSWER))
    async with running_gateway(build_config(fixture_config(upstream))) as (url, _):
        status, headers, answer = await send_captured(url, name, raw)
    assert status == 200, answer[:300]
    check_upstream_request(upstream, name, sent)
    if stream:
        assert headers["content-type"].startswith("text/event-stream")
        events = sse_events(answer)
        assert events[0][1]["message"]["model"] == sent["model"]
        assert [e for e, _ in events][-1] == "message_stop"
    else:
        assert orjson.loads(answer) == {**ANSWER, "model": sent["model"]}


@pytest.mark.parametrize("name", COUNTS)
async def test_captured_count_tokens_request_passes_unchanged(
    upstream: FakeUpstream, name: str
) -> None:
    tokens = CAPTURED[name]["answered_with"]["input_tokens"]
    upstream.script(Reply(json={"input_tokens": tokens}))
    raw = (FIXTURES / f"{name}.json").read_bytes()
    async with running_gateway(build_config(fixture_config(upstream))) as (url, _):
        status, _, answer = await send_captured(url, name, raw)
    assert status == 200, answer[:300]
    assert orjson.loads(answer) == {"input_tokens": tokens}
    check_upstream_request(upstream, name, orjson.loads(raw))
