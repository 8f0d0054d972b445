"""The request lifecycle: disconnects, pooled upstream connections, timeouts, request ids."""

from __future__ import annotations

import asyncio
import gc
import logging
import re
import socket
import time
from typing import Any

import anthropic
import orjson
import pytest
from anthropic.types import MessageParam

import fakes.anthropic_script as script
import fakes.openai_script as openai_script
from conftest import GATEWAY_KEY, PROVIDER_KEY, SDK
from fakes.gateway import build_config, running_gateway
from fakes.upstream import FakeUpstream, Reply
from helpers import anthropic_config, envelope, error_of, get, post, sse_events

HELLO: list[MessageParam] = [{"role": "user", "content": "Hello"}]
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
    upstream: FakeUpstream, sdk: SDK
) -> None:
    never = asyncio.Event()
    upstream.script(Reply(chunks=script.events(ANSWER), hold=never, hold_after=2))
    try:
        async with running_gateway(build_config(anthropic_config(upstream))) as (url, _):
            async with sdk(url).messages.stream(
                model="claude-test", max_tokens=100, messages=HELLO
            ) as stream:
                first = await asyncio.wait_for(anext(aiter(stream)), timeout=30)
                assert first.type == "message_start"
            # Leaving the block closed the client's connection with the stream still open.
            await asyncio.wait_for(upstream.disconnected.wait(), timeout=30)
            assert upstream.closed_streams == 1
    finally:
        never.set()


async def test_upstream_connections_are_pooled_and_reused(upstream: FakeUpstream, sdk: SDK) -> None:
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


async def test_first_byte_timeout_answers_504(upstream: FakeUpstream, sdk: SDK) -> None:
    upstream.default = script.reply(ANSWER, delay=FOREVER)
    config = build_config(with_timeouts(upstream, first_byte=0.2))
    async with running_gateway(config) as (url, _):
        with pytest.raises(anthropic.APIStatusError) as caught:
            await sdk(url).messages.create(model="claude-test", max_tokens=100, messages=HELLO)
    assert caught.value.status_code == 504
    assert error_of(caught.value)["type"] == "timeout_error"
    assert caught.value.response.headers["request-id"].startswith("req_")


@pytest.mark.parametrize(
    "reply",
    [
        # No response headers in time.
        Reply(chunks=script.events(ANSWER), delay=FOREVER),
        # Headers at once, then no event in time.
        Reply(chunks=script.events(ANSWER), hold=asyncio.Event(), hold_after=0),
        # Comments more often than the silence allowed, but no event before the deadline.
        Reply(chunks=[b": keep-alive\n\n"] * 40, chunk_delay=0.05),
    ],
    ids=["no-headers", "no-first-event", "only-comments"],
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


@pytest.mark.parametrize(("which", "seconds"), [("idle", 0.2), ("total", 0.5)])
async def test_a_timeout_mid_stream_ends_with_an_error_event(
    upstream: FakeUpstream, which: str, seconds: float
) -> None:
    never = asyncio.Event()
    upstream.script(Reply(chunks=script.events(ANSWER), hold=never, hold_after=3))
    config = build_config(with_timeouts(upstream, **{which: seconds}))
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


ACCESS_LINE = re.compile(r"^(GET|POST|HEAD) (\S+) (\d{3}) (\d+\.\d+)ms (req_[0-9a-f]+) ?(.*)$")


async def test_one_access_line_per_request_without_prompt_or_keys(
    upstream: FakeUpstream, sdk: SDK, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="messagegate.access")
    prompt: list[MessageParam] = [{"role": "user", "content": "the secret plan is 4417"}]
    upstream.script(script.reply(ANSWER), script.stream_reply(ANSWER))
    async with running_gateway(build_config(anthropic_config(upstream))) as (url, _):
        client = sdk(url)
        created = await client.messages.with_raw_response.create(
            model="claude-test", max_tokens=10, messages=prompt
        )
        async with client.messages.stream(
            model="claude-test", max_tokens=10, messages=prompt
        ) as stream:
            await stream.get_final_message()
            stream_id = stream.response.headers["request-id"]
        with pytest.raises(anthropic.NotFoundError):
            await client.messages.create(model="claude-nope", max_tokens=10, messages=prompt)
        with pytest.raises(anthropic.AuthenticationError):
            await sdk(url, key="wrong").models.list()
    records = [r for r in caplog.records if r.name == "messagegate.access"]
    lines = [ACCESS_LINE.match(r.getMessage()) for r in records]
    assert all(lines), [r.getMessage() for r in records]
    # A line is written once its answer has left: a stream's may follow the next request's.
    fields = sorted((m[1], m[2], m[3]) for m in lines if m)
    assert fields == [
        ("GET", "/v1/models", "401"),
        ("POST", "/v1/messages", "200"),
        ("POST", "/v1/messages", "200"),
        ("POST", "/v1/messages", "404"),
    ]
    by_id = {m[5]: m for m in lines if m}
    plain, streamed = by_id[created.headers["request-id"]], by_id[stream_id]
    for line in (plain, streamed):
        assert line[3] == "200"
        assert "model=claude-test" in line[6]
        assert "provider=anth" in line[6]
        assert "tokens=in=11 out=7" in line[6]
    (unknown,) = [m[6] for m in lines if m and m[3] == "404"]
    assert "model=claude-nope" in unknown
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert "4417" not in text
    assert GATEWAY_KEY not in text
    assert PROVIDER_KEY not in text


async def test_every_response_carries_a_unique_request_id(upstream: FakeUpstream) -> None:
    upstream.script(script.reply(ANSWER), Reply(chunks=script.events(ANSWER)))
    upstream.default = script.error_reply(529, "overloaded_error", "Overloaded")
    body = {"model": "claude-test", "max_tokens": 10, "messages": HELLO}
    began = time.time()
    async with running_gateway(build_config(anthropic_config(upstream))) as (url, _):
        answers = [
            await post(url, "/v1/messages", body),
            await post(url, "/v1/messages", {**body, "stream": True}),
            await post(url, "/v1/messages", body),
            await post(url, "/v1/messages", b"{"),
            await post(url, "/v1/messages", body, key="wrong"),
            await get(url, "/v1/models/none"),
            await get(url, "/missing", key=None),
            await get(url, "/", key=None, method="HEAD"),
            await get(url, "/health", key=None),
        ]
    statuses = [status for status, _, _ in answers]
    assert statuses == [200, 200, 529, 400, 401, 404, 404, 200, 200]
    ids = [headers["request-id"] for _, headers, _ in answers]
    assert all(re.fullmatch(r"req_[0-9a-f]{24}", i) for i in ids)
    assert len(set(ids)) == len(ids)
    # The microsecond each was made in comes first, so that ids sort by time (the ledger appends
    # them).
    made = [int(i[4:18], 16) / 1e6 for i in ids]
    assert made == sorted(made)
    assert began <= made[0]
    assert made[-1] <= time.time()


@pytest.mark.parametrize("stream", [False, True], ids=["create", "stream"])
async def test_client_leaving_before_the_answer_starts_closes_the_upstream_request(
    upstream: FakeUpstream, sdk: SDK, stream: bool
) -> None:
    arrived = asyncio.Event()
    chunks = script.events(ANSWER) if stream else None
    upstream.default = Reply(json=ANSWER, chunks=chunks, delay=FOREVER, on_request=arrived.set)
    async with running_gateway(build_config(anthropic_config(upstream))) as (url, _):
        waiting = asyncio.create_task(
            post(url, "/v1/messages", {**stream_body(), "stream": stream})
        )
        await asyncio.wait_for(arrived.wait(), timeout=30)
        waiting.cancel()
        await asyncio.wait_for(upstream.disconnected.wait(), timeout=30)
    assert len(upstream.received) == 1


async def test_a_client_that_stops_reading_pauses_the_upstream_then_gets_every_event(
    upstream: FakeUpstream,
) -> None:
    # More than the gateway's socket send buffer can hold (4 MiB at most on Linux by default),
    # so the gateway's own write buffer fills and it must stop reading the upstream.
    delta = script.sse(
        "content_block_delta",
        {
            "type": "content_block_delta",
            "index": 0,
            "delta": {"type": "text_delta", "text": "x" * 8000},
        },
    )
    count = 1500
    message = script.message([{"type": "text", "text": ""}])
    start, block_start, _empty_delta, *end = script.events(message, ping=False)
    upstream.script(Reply(chunks=[start, block_start, *[delta] * count, *end]))
    request = orjson.dumps(stream_body())
    head = (
        f"POST /v1/messages HTTP/1.1\r\nhost: gw\r\nx-api-key: {GATEWAY_KEY}\r\n"
        f"content-type: application/json\r\ncontent-length: {len(request)}\r\n\r\n"
    ).encode()
    async with running_gateway(build_config(anthropic_config(upstream))) as (url, app):
        client = socket.socket()
        # A small fixed receive buffer (no autotuning): the client holds almost nothing unread.
        client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8192)
        client.connect(("127.0.0.1", int(url.rsplit(":", 1)[1])))
        reader, writer = await asyncio.open_connection(sock=client, limit=1 << 20)
        writer.write(head + request)
        assert app.pool is not None
        for _ in range(1000):
            if app.pool.paused_count():
                break
            await asyncio.sleep(0.01)
        assert app.pool.paused_count() == 1
        raw = await asyncio.wait_for(read_until(reader, b"\r\n0\r\n\r\n"), timeout=30)
        writer.close()
    body = dechunk(raw.partition(b"\r\n\r\n")[2])
    events = sse_events(body)
    texts = [data["delta"].get("text") for name, data in events if name == "content_block_delta"]
    assert texts.count("x" * 8000) == count
    assert events[-1][0] == "message_stop"
    assert upstream.closed_streams == 1


async def read_until(reader: asyncio.StreamReader, end: bytes) -> bytes:
    parts = []
    while True:
        part = await reader.read(1 << 16)
        assert part, "the gateway closed the connection early"
        parts.append(part)
        if parts[-1].endswith(end) or b"".join(parts[-2:]).endswith(end):
            return b"".join(parts)


def dechunk(body: bytes) -> bytes:
    """The payload of a chunked transfer-encoded body."""
    out: list[bytes] = []
    while True:
        size_line, _, body = body.partition(b"\r\n")
        size = int(size_line, 16)
        if size == 0:
            return b"".join(out)
        out.append(body[:size])
        body = body[size + 2 :]


async def test_requests_leave_no_reference_cycles_for_the_garbage_collector(
    upstream: FakeUpstream, second_upstream: FakeUpstream
) -> None:
    # A request in a reference cycle is freed only by the collector, whose passes over tens of
    # thousands of such objects are the gateway's slowest requests.
    upstream.responder = lambda seen: (
        Reply(chunks=script.events(ANSWER)) if seen.json.get("stream") else script.reply(ANSWER)
    )
    second_upstream.responder = lambda seen: (
        Reply(chunks=openai_script.chunks("gpt-up", "Hi there", [], usage=True))
        if seen.json.get("stream")
        else Reply(json=openai_script.completion("gpt-up", "Hi there", []))
    )
    config = anthropic_config(upstream)
    config["providers"]["oai"] = {"kind": "openai", "base_url": f"{second_upstream.url}/v1"}
    config["models"]["gpt-test"] = {"routes": [{"provider": "oai", "model": "gpt-up"}]}
    async with running_gateway(build_config(config)) as (url, _):
        await post(url, "/v1/messages", {**stream_body(), "stream": False})  # warm up
        gc.collect()
        gc.set_debug(gc.DEBUG_SAVEALL)
        try:
            for model in ("claude-test", "gpt-test"):
                for streamed in (False, True):
                    body = {**stream_body(), "model": model, "stream": streamed}
                    status, _, _ = await post(url, "/v1/messages", body)
                    assert status == 200
            gc.collect()
            ours = [
                o for o in gc.garbage if type(o).__module__.startswith(("messagegate", "uvicorn"))
            ]
        finally:
            gc.set_debug(0)
            gc.garbage.clear()
    assert ours == []


async def test_streams_without_messagegates_http_protocol_fail_before_the_upstream_is_asked(
    upstream: FakeUpstream,
) -> None:
    upstream.script(Reply(chunks=script.events(ANSWER)))
    config = build_config(anthropic_config(upstream))
    async with running_gateway(config, http="httptools") as (url, _):
        status, _, body = await post(url, "/v1/messages", stream_body())
    assert status == 500
    assert envelope(body) == (
        "api_error",
        "streaming needs messagegate's HTTP protocol (messagegate serve)",
    )
    assert upstream.received == []
