"""Streaming through an Anthropic-native route: event by event, byte for byte, as it arrives."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import anthropic
import orjson
import pytest
from anthropic.types import MessageParam

import fakes.anthropic_script as script
from conftest import GATEWAY_KEY, PROVIDER_KEY, SDK
from fakes.gateway import build_config, running_gateway
from fakes.upstream import FakeUpstream, Reply
from helpers import anthropic_config, envelope, error_of, post, sse_events

HELLO: list[MessageParam] = [{"role": "user", "content": "Hello"}]
THINKING = {"type": "thinking", "thinking": "Let me think.", "signature": "EqQBCkYIBRgCKkD=="}
TOOL_USE = {
    "type": "tool_use",
    "id": "toolu_01A",
    "name": "get_weather",
    "input": {"city": "Paris", "units": ["c", "f"]},
}
TEXT = {"type": "text", "text": "Hello from upstream"}
RICH = script.message([THINKING, TEXT, TOOL_USE], stop_reason="tool_use")
UPSTREAM_ERROR = {
    "type": "error",
    "error": {"type": "overloaded_error", "message": "Overloaded"},
}


def as_client_sees(chunks: list[bytes], model: str) -> bytes:
    """The upstream's events with only message_start's message.model renamed."""
    out = []
    for chunk in chunks:
        if chunk.startswith(b"event: message_start\n"):
            data = orjson.loads(chunk.split(b"data: ", 1)[1])
            data["message"]["model"] = model
            chunk = script.sse("message_start", data)
        out.append(chunk)
    return b"".join(out)


def stream_body(**extra: Any) -> dict[str, Any]:
    return {"model": "claude-test", "max_tokens": 100, "messages": HELLO, "stream": True, **extra}


@pytest.mark.parametrize("path", ["/v1/messages", "/v1/messages?beta=true"])
async def test_raw_stream_is_the_upstreams_events_with_only_the_model_renamed(
    upstream: FakeUpstream, path: str
) -> None:
    chunks = script.events(RICH)
    upstream.script(Reply(chunks=chunks))
    async with running_gateway(build_config(anthropic_config(upstream))) as (url, _):
        status, headers, body = await post(url, path, stream_body())
    assert status == 200
    assert headers["content-type"].startswith("text/event-stream")
    assert headers["request-id"].startswith("req_")
    assert body == as_client_sees(chunks, "claude-test")
    names = [name for name, _ in sse_events(body)]
    assert names[:2] == ["message_start", "ping"]
    assert "signature_delta" in body.decode()
    assert "input_json_delta" in body.decode()
    received = upstream.received[0]
    assert received.path == "/v1/messages"
    assert received.json == {**stream_body(), "model": "claude-upstream-1"}
    assert received.headers["x-api-key"] == PROVIDER_KEY


async def test_beta_stream_reaches_upstream_with_beta_query(
    upstream: FakeUpstream, sdk: SDK
) -> None:
    upstream.script(Reply(chunks=script.events(RICH)))
    async with (
        running_gateway(build_config(anthropic_config(upstream))) as (url, _),
        sdk(url).beta.messages.stream(
            model="claude-test",
            max_tokens=100,
            messages=[{"role": "user", "content": "Hello"}],
            betas=["beta-x"],
            # This SDK's beta namespace no longer adds ?beta=true itself; Claude Code does.
            extra_query={"beta": "true"},
        ) as stream,
    ):
        final = await stream.get_final_message()
    assert final.model == "claude-test"
    assert [block.type for block in final.content] == ["thinking", "text", "tool_use"]
    received = upstream.received[0]
    assert received.query == {"beta": "true"}
    assert received.headers["anthropic-beta"] == "beta-x"


async def test_sdk_accumulated_stream_equals_the_non_stream_answer(
    upstream: FakeUpstream, sdk: SDK
) -> None:
    upstream.script(script.reply(RICH), Reply(chunks=script.events(RICH)))
    async with running_gateway(build_config(anthropic_config(upstream))) as (url, _):
        client = sdk(url)
        created = await client.messages.create(model="claude-test", max_tokens=100, messages=HELLO)
        async with client.messages.stream(
            model="claude-test", max_tokens=100, messages=HELLO
        ) as stream:
            streamed = await stream.get_final_message()
    assert streamed.model_dump() == created.model_dump()
    assert created.model == "claude-test"
    thinking, text, tool = created.content
    assert thinking.type == "thinking"
    assert (thinking.thinking, thinking.signature) == (THINKING["thinking"], THINKING["signature"])
    assert text.type == "text"
    assert text.text == TEXT["text"]
    assert tool.type == "tool_use"
    assert tool.input == TOOL_USE["input"]
    assert [r.json.get("stream") for r in upstream.received] == [None, True]


async def test_first_events_reach_the_client_before_the_upstream_finishes(
    upstream: FakeUpstream, sdk: SDK
) -> None:
    release = asyncio.Event()
    upstream.script(Reply(chunks=script.events(RICH), hold=release, hold_after=2))
    async with (
        running_gateway(build_config(anthropic_config(upstream))) as (url, _),
        sdk(url).messages.stream(model="claude-test", max_tokens=100, messages=HELLO) as stream,
    ):
        events = aiter(stream)
        first = await asyncio.wait_for(anext(events), timeout=5)
        assert first.type == "message_start"
        assert first.message.model == "claude-test"
        release.set()
        rest = [event.type async for event in events]
    assert rest[-1] == "message_stop"


async def test_upstream_error_event_passes_through_intact(upstream: FakeUpstream, sdk: SDK) -> None:
    chunks = [*script.events(RICH)[:4], script.sse("error", UPSTREAM_ERROR)]
    upstream.script(Reply(chunks=chunks), Reply(chunks=chunks))
    async with running_gateway(build_config(anthropic_config(upstream))) as (url, _):
        status, _, body = await post(url, "/v1/messages", stream_body())
        with pytest.raises(anthropic.APIStatusError) as caught:
            async with sdk(url).messages.stream(
                model="claude-test", max_tokens=100, messages=HELLO
            ) as stream:
                await stream.get_final_message()
    assert status == 200
    assert body == as_client_sees(chunks, "claude-test")
    assert sse_events(body)[-1] == ("error", UPSTREAM_ERROR)
    assert caught.value.body == UPSTREAM_ERROR


async def test_upstream_dropping_mid_stream_ends_with_an_error_event(
    upstream: FakeUpstream,
) -> None:
    chunks = script.events(RICH)
    upstream.script(Reply(chunks=chunks, drop_after=3))
    async with running_gateway(build_config(anthropic_config(upstream))) as (url, _):
        status, _, body = await asyncio.wait_for(
            post(url, "/v1/messages", stream_body()), timeout=10
        )
    assert status == 200
    events = sse_events(body)
    assert body.startswith(as_client_sees(chunks[:3], "claude-test"))
    assert [name for name, _ in events] == ["message_start", "ping", "content_block_start", "error"]
    error = events[-1][1]
    assert error["type"] == "error"
    assert error["error"]["type"] == "api_error"
    assert PROVIDER_KEY not in body.decode()


async def test_upstream_ending_without_message_stop_ends_with_an_error_event(
    upstream: FakeUpstream,
) -> None:
    upstream.script(Reply(chunks=script.events(RICH)[:-1]))
    async with running_gateway(build_config(anthropic_config(upstream))) as (url, _):
        status, _, body = await post(url, "/v1/messages", stream_body())
    events = sse_events(body)
    assert status == 200
    assert events[-2][0] == "message_delta"
    assert events[-1][0] == "error"
    assert events[-1][1]["error"]["type"] == "api_error"


GARBLED = b"event: message_delta\ndata: {not json\n\n"


async def test_garbled_upstream_event_before_the_first_byte_is_a_502(
    upstream: FakeUpstream,
) -> None:
    upstream.default = Reply(chunks=[GARBLED])
    async with running_gateway(build_config(anthropic_config(upstream))) as (url, _):
        status, headers, body = await post(url, "/v1/messages", stream_body())
    assert status == 502
    assert headers["content-type"] == "application/json"
    assert envelope(body)[0] == "api_error"


async def test_garbled_upstream_event_mid_stream_ends_with_an_error_event(
    upstream: FakeUpstream, sdk: SDK
) -> None:
    release = asyncio.Event()
    chunks = [*script.events(RICH)[:2], GARBLED]
    upstream.script(Reply(chunks=chunks, hold=release, hold_after=2))
    async with (
        running_gateway(build_config(anthropic_config(upstream))) as (url, _),
        sdk(url).messages.stream(model="claude-test", max_tokens=100, messages=HELLO) as stream,
    ):
        events = aiter(stream)
        assert (await asyncio.wait_for(anext(events), timeout=5)).type == "message_start"
        release.set()
        with pytest.raises(anthropic.APIStatusError) as caught:
            async for _ in events:
                pass
    assert error_of(caught.value)["type"] == "api_error"


async def test_error_status_before_the_stream_is_a_json_error(upstream: FakeUpstream) -> None:
    upstream.script(script.error_reply(400, "invalid_request_error", "max_tokens: too large"))
    async with running_gateway(build_config(anthropic_config(upstream))) as (url, _):
        status, headers, body = await post(url, "/v1/messages", stream_body())
    assert status == 400
    assert headers["content-type"] == "application/json"
    assert orjson.loads(body)["error"]["message"] == "max_tokens: too large"


async def test_the_gateway_pings_the_client_while_the_upstream_is_silent(
    upstream: FakeUpstream,
) -> None:
    release = asyncio.Event()
    chunks = script.events(RICH)
    upstream.script(Reply(chunks=chunks, hold=release, hold_after=3))
    config = build_config(anthropic_config(upstream, ping_interval=0.05))
    ping = script.sse("ping", {"type": "ping"})
    upstream_pings = chunks.count(ping)
    headers = {"x-api-key": GATEWAY_KEY}
    try:
        async with (
            running_gateway(config) as (url, _),
            aiohttp.ClientSession() as session,
            session.post(url + "/v1/messages", json=stream_body(), headers=headers) as response,
        ):
            seen = b""
            async with asyncio.timeout(5):
                # The upstream's first three events, and two pings of the gateway's own.
                while b"content_block_start" not in seen or seen.count(ping) < upstream_pings + 2:
                    seen += await response.content.readany()
            release.set()
            body = seen + await response.read()
    finally:
        release.set()
    expected = as_client_sees(chunks, "claude-test").split(b"\n\n")
    sent = body.split(b"\n\n")
    ping = ping.removesuffix(b"\n\n")
    # Every upstream event, in order; the only extra events are pings.
    assert [c for c in sent if c != ping] == [c for c in expected if c != ping]
    assert sent.count(ping) >= upstream_pings + 2


async def test_multi_line_data_and_crlf_events_are_relayed_readably(
    upstream: FakeUpstream, sdk: SDK
) -> None:
    """An upstream may split an event's JSON over several data lines or end lines with CRLF."""
    chunks = script.events(RICH)
    delta = next(c for c in chunks if c.startswith(b"event: content_block_delta"))
    name, data = delta.rstrip(b"\n").split(b"\n")
    split = name + b"\n" + data.replace(b',"delta":', b',\ndata: "delta":') + b"\n\n"
    crlf = [c.replace(b"\n", b"\r\n") for c in chunks]
    upstream.script(Reply(chunks=[split if c == delta else c for c in chunks]), Reply(chunks=crlf))
    async with running_gateway(build_config(anthropic_config(upstream))) as (url, _):
        client = sdk(url)
        finals = []
        for _ in range(2):
            async with client.messages.stream(
                model="claude-test", max_tokens=100, messages=HELLO
            ) as stream:
                finals.append(await stream.get_final_message())
    expected = anthropic.types.Message.model_validate({**RICH, "model": "claude-test"})
    assert [final.model_dump() for final in finals] == [expected.model_dump()] * 2
