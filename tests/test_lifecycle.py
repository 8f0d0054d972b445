"""The request lifecycle: disconnects, pooled upstream connections, timeouts, request ids."""

from __future__ import annotations

import asyncio
from typing import Any

import anthropic
import pytest

import fakes.anthropic_script as script
from fakes.gateway import build_config, running_gateway
from fakes.upstream import FakeUpstream, Reply
from helpers import anthropic_config, envelope, post, sse_events

HELLO = [{"role": "user", "content": "Hello"}]
ANSWER = script.message([{"type": "text", "text": "Hello there, how are you?"}])
# Longer than any test may take: only a working timeout ends these waits.
FOREVER = 60.0


def with_timeouts(upstream: FakeUpstream, **timeouts: float) -> dict[str, Any]:
    config = anthropic_config(upstream)
    config["providers"]["anth"]["timeouts"] = timeouts
    return config


def stream_body() -> dict[str, Any]:
    return {"model": "claude-test", "max_tokens": 100, "messages": HELLO, "stream": True}


async def test_client_disconnect_mid_stream_closes_the_upstream_request(
    upstream: FakeUpstream, sdk
) -> None:
    never = asyncio.Event()
    upstream.script(Reply(chunks=script.events(ANSWER), hold=never, hold_after=2))
    try:
        async with running_gateway(build_config(anthropic_config(upstream))) as (url, _):
            async with sdk(url).messages.stream(
                model="claude-test", max_tokens=100, messages=HELLO
            ) as stream:
                first = await asyncio.wait_for(anext(aiter(stream)), timeout=5)
                assert first.type == "message_start"
            # Leaving the block closed the client's connection with the stream still open.
            await asyncio.wait_for(upstream.disconnected.wait(), timeout=5)
            assert upstream.closed_streams == 1
    finally:
        never.set()


async def test_upstream_connections_are_pooled_and_reused(upstream: FakeUpstream, sdk) -> None:
    upstream.script(
        script.reply(ANSWER),
        script.reply(ANSWER),
        Reply(chunks=script.events(ANSWER)),
        Reply(chunks=script.events(ANSWER)),
    )
    async with running_gateway(build_config(anthropic_config(upstream))) as (url, _):
        client = sdk(url)
        for _ in range(2):
            await client.messages.create(model="claude-test", max_tokens=100, messages=HELLO)
        for _ in range(2):
            async with client.messages.stream(
                model="claude-test", max_tokens=100, messages=HELLO
            ) as stream:
                await stream.get_final_message()
    ports = [r.peer_port for r in upstream.received]
    assert len(ports) == 4
    assert 0 not in ports
    assert len(set(ports)) == 1, ports


async def test_first_byte_timeout_answers_504(upstream: FakeUpstream, sdk) -> None:
    upstream.default = script.reply(ANSWER, delay=FOREVER)
    config = build_config(with_timeouts(upstream, first_byte=0.2))
    async with running_gateway(config) as (url, _):
        with pytest.raises(anthropic.APIStatusError) as caught:
            await sdk(url).messages.create(model="claude-test", max_tokens=100, messages=HELLO)
    assert caught.value.status_code == 504
    assert caught.value.body["error"]["type"] == "timeout_error"
    assert caught.value.response.headers["request-id"].startswith("req_")


@pytest.mark.parametrize(
    "reply",
    [
        # No response headers in time.
        Reply(chunks=script.events(ANSWER), delay=FOREVER),
        # Headers at once, then no event in time.
        Reply(chunks=script.events(ANSWER), hold=asyncio.Event(), hold_after=0),
    ],
    ids=["no-headers", "no-first-event"],
)
async def test_stream_first_byte_timeout_answers_504(upstream: FakeUpstream, reply: Reply) -> None:
    upstream.default = reply
    config = build_config(with_timeouts(upstream, first_byte=0.2))
    try:
        async with running_gateway(config) as (url, _):
            status, headers, body = await asyncio.wait_for(
                post(url, "/v1/messages", stream_body()), timeout=10
            )
    finally:
        if reply.hold is not None:
            reply.hold.set()
    assert status == 504
    assert headers["content-type"] == "application/json"
    assert envelope(body)[0] == "timeout_error"


async def test_idle_timeout_mid_stream_ends_with_an_error_event(upstream: FakeUpstream) -> None:
    never = asyncio.Event()
    upstream.script(Reply(chunks=script.events(ANSWER), hold=never, hold_after=3))
    config = build_config(with_timeouts(upstream, idle=0.2))
    try:
        async with running_gateway(config) as (url, _):
            status, _, body = await asyncio.wait_for(
                post(url, "/v1/messages", stream_body()), timeout=10
            )
    finally:
        never.set()
    events = sse_events(body)
    assert status == 200
    assert [name for name, _ in events] == [
        "message_start",
        "ping",
        "content_block_start",
        "error",
    ]
    assert events[-1][1]["error"]["type"] == "timeout_error"


async def test_total_timeout_mid_stream_ends_with_an_error_event(upstream: FakeUpstream) -> None:
    never = asyncio.Event()
    upstream.script(Reply(chunks=script.events(ANSWER), hold=never, hold_after=3))
    config = build_config(with_timeouts(upstream, total=0.5))
    try:
        async with running_gateway(config) as (url, _):
            status, _, body = await asyncio.wait_for(
                post(url, "/v1/messages", stream_body()), timeout=10
            )
    finally:
        never.set()
    events = sse_events(body)
    assert status == 200
    assert events[0][0] == "message_start"
    assert events[-1][0] == "error"
    assert events[-1][1]["error"]["type"] == "timeout_error"
