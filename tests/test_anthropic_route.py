"""The Anthropic-native path through the gateway, with the official SDK as the client."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from anthropic.types import MessageParam, ThinkingBlockParam

import fakes.anthropic_script as script
from conftest import PROVIDER_KEY, SDK
from fakes.gateway import build_config, running_gateway
from fakes.upstream import FakeUpstream
from helpers import anthropic_config, first_text, post, sse_events
from messagegate.translate.signatures import gateway_signature

HELLO: list[MessageParam] = [{"role": "user", "content": "Hello"}]


async def test_create_swaps_model_and_key_and_names_the_clients_model(
    upstream: FakeUpstream, sdk: SDK
) -> None:
    upstream.script(script.reply(script.message([{"type": "text", "text": "Hi there"}])))
    async with running_gateway(build_config(anthropic_config(upstream))) as (url, _):
        response = await sdk(url).messages.with_raw_response.create(
            model="claude-test",
            max_tokens=100,
            messages=HELLO,
            extra_headers={"anthropic-version": "2023-06-01", "anthropic-beta": "beta-a,beta-b"},
        )
    message = await response.parse()
    assert message.model == "claude-test"
    assert first_text(message) == "Hi there"
    assert response.headers["request-id"].startswith("req_")
    assert response.headers["x-messagegate-provider"] == "anth"
    received = upstream.received[0]
    assert received.path == "/v1/messages"
    assert received.headers["x-api-key"] == PROVIDER_KEY
    assert received.headers["anthropic-version"] == "2023-06-01"
    assert received.headers["anthropic-beta"] == "beta-a,beta-b"
    assert received.json == {"model": "claude-upstream-1", "max_tokens": 100, "messages": HELLO}


ASSISTANT_TOOL_TURN = {
    "role": "assistant",
    "content": [
        {"type": "thinking", "thinking": "I should look.", "signature": "EqQBCkYIBRgCKkD=="},
        {
            "type": "redacted_thinking",
            "data": "EmwKAhgBEgy3va3pzix/LafPsn4aDFIT2Xlxh0L5L8rLVyIwxtE3",
        },
        {"type": "text", "text": "Looking."},
        {"type": "tool_use", "id": "toolu_01", "name": "read", "input": {"path": "/a"}},
    ],
}
KITCHEN_SINK: dict[str, Any] = {
    "model": "claude-test",
    "max_tokens": 64000,
    "system": [{"type": "text", "text": "Be brief.", "cache_control": {"type": "ephemeral"}}],
    "messages": [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "Look at these."},
                {
                    "type": "image",
                    "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="},
                },
                {"type": "image", "source": {"type": "url", "url": "https://example.com/a.png"}},
                {
                    "type": "document",
                    "source": {"type": "text", "media_type": "text/plain", "data": "doc"},
                    "title": "A document",
                },
            ],
        },
        ASSISTANT_TOOL_TURN,
        {
            "role": "user",
            "content": [
                {
                    "type": "tool_result",
                    "tool_use_id": "toolu_01",
                    "content": [{"type": "text", "text": "contents"}],
                    "is_error": False,
                }
            ],
        },
        {"role": "user", "content": "A second user turn in a row."},
        {"role": "system", "content": "A system turn inside messages."},
    ],
    "tools": [
        {"name": "read", "description": "Read a file", "input_schema": {"type": "object"}},
        {"type": "web_search_20250305", "name": "web_search", "max_uses": 3},
    ],
    "tool_choice": {"type": "auto", "disable_parallel_tool_use": True},
    "stop_sequences": ["\n\nHuman:"],
    "temperature": 0.5,
    "top_p": 0.9,
    "top_k": 40,
    "metadata": {"user_id": "user-1"},
    "thinking": {"type": "adaptive"},
    "output_config": {"effort": "high"},
    "context_management": {"edits": [{"type": "clear_tool_uses_20250919"}]},
    "service_tier": "auto",
    # Fields the gateway has never heard of reach the Anthropic upstream untouched.
    "container": "container_01",
    "mcp_servers": [{"type": "url", "url": "https://mcp.example.com", "name": "ex"}],
    "x_future_field": {"nested": [1, 2.5, None, True]},
}


@pytest.mark.parametrize("stream", [False, True])
async def test_every_documented_field_and_unknown_ones_pass_through_unchanged(
    upstream: FakeUpstream, stream: bool
) -> None:
    answer = script.message([{"type": "text", "text": "ok"}])
    upstream.script(script.stream_reply(answer) if stream else script.reply(answer))
    sent = {**KITCHEN_SINK, "stream": stream}
    async with running_gateway(build_config(anthropic_config(upstream))) as (url, _):
        status, _, raw = await post(url, "/v1/messages", sent)
    assert status == 200
    received = upstream.received[0]
    expected = {**sent, "model": "claude-upstream-1"}
    assert received.json == expected
    assert received.body == orjson.dumps(expected)
    if stream:
        assert sse_events(raw)[0][1]["message"]["model"] == "claude-test"
    else:
        assert orjson.loads(raw) == {**answer, "model": "claude-test"}


async def test_sdk_extra_body_fields_reach_the_upstream(upstream: FakeUpstream, sdk: SDK) -> None:
    upstream.script(script.reply(script.message([{"type": "text", "text": "ok"}])))
    async with running_gateway(build_config(anthropic_config(upstream))) as (url, _):
        await sdk(url).messages.create(
            model="claude-test",
            max_tokens=10,
            messages=[
                {"role": "user", "content": "one"},
                {"role": "user", "content": "two"},
            ],
            thinking={"type": "adaptive"},
            service_tier="auto",
            extra_body={"brand_new_option": {"level": 3}},
        )
    received = upstream.received[0].json
    assert received["brand_new_option"] == {"level": 3}
    assert received["thinking"] == {"type": "adaptive"}
    assert received["service_tier"] == "auto"
    assert [m["content"] for m in received["messages"]] == ["one", "two"]


async def test_beta_create_reaches_the_upstream_beta_api(upstream: FakeUpstream, sdk: SDK) -> None:
    upstream.script(script.reply(script.message([{"type": "text", "text": "ok"}])))
    async with running_gateway(build_config(anthropic_config(upstream))) as (url, _):
        message = await sdk(url).beta.messages.create(
            model="claude-test",
            max_tokens=10,
            messages=[{"role": "user", "content": "Hello"}],
            betas=["context-management-2025-06-27", "interleaved-thinking-2025-05-14"],
            # This SDK's beta namespace no longer adds ?beta=true itself; Claude Code does.
            extra_query={"beta": "true"},
        )
    assert message.model == "claude-test"
    received = upstream.received[0]
    assert (received.path, received.query) == ("/v1/messages", {"beta": "true"})
    assert received.headers["anthropic-beta"] == (
        "context-management-2025-06-27,interleaved-thinking-2025-05-14"
    )


async def test_other_query_parameters_and_client_headers_stay_at_the_gateway(
    upstream: FakeUpstream,
) -> None:
    upstream.script(script.reply(script.message([{"type": "text", "text": "ok"}])))
    body = {"model": "claude-test", "max_tokens": 10, "messages": HELLO}
    headers = {"x-claude-code-session-id": "s-1", "authorization": "Bearer client-secret"}
    async with running_gateway(build_config(anthropic_config(upstream))) as (url, _):
        status, _, _ = await post(url, "/v1/messages?beta=false&debug=1", body, headers)
    assert status == 200
    received = upstream.received[0]
    assert received.query == {}
    assert received.headers["anthropic-version"] == "2023-06-01"
    assert "anthropic-beta" not in received.headers
    assert "x-claude-code-session-id" not in received.headers
    assert "authorization" not in received.headers
    assert received.headers["x-api-key"] == PROVIDER_KEY


async def test_bearer_provider_auth_option(upstream: FakeUpstream, sdk: SDK) -> None:
    upstream.script(script.reply(script.message([{"type": "text", "text": "ok"}])))
    config = anthropic_config(upstream)
    config["providers"]["anth"]["auth"] = "bearer"
    async with running_gateway(build_config(config)) as (url, _):
        await sdk(url).messages.create(model="claude-test", max_tokens=10, messages=HELLO)
    headers = upstream.received[0].headers
    assert headers["authorization"] == f"Bearer {PROVIDER_KEY}"
    assert "x-api-key" not in headers


async def test_thinking_anthropic_did_not_sign_is_dropped_before_an_anthropic_route(
    upstream: FakeUpstream, sdk: SDK
) -> None:
    upstream.script(script.reply(script.message([{"type": "text", "text": "ok"}])))
    signed: ThinkingBlockParam = {
        "type": "thinking",
        "thinking": "mine",
        "signature": "EqQBCkYIARgCKkB=",
    }
    foreign: ThinkingBlockParam = {
        "type": "thinking",
        "thinking": "theirs",
        "signature": gateway_signature(),
    }
    history: list[MessageParam] = [
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": [signed, foreign, {"type": "text", "text": "Hello"}]},
        {"role": "user", "content": "Again"},
    ]
    async with running_gateway(build_config(anthropic_config(upstream))) as (url, _):
        await sdk(url).messages.create(model="claude-test", max_tokens=10, messages=history)
    sent = upstream.received[0].json["messages"]
    assert sent[1]["content"] == [signed, {"type": "text", "text": "Hello"}]
    assert sent[0] == history[0]
    assert sent[2] == history[2]
