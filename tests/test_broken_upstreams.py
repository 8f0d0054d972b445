"""Broken or hostile upstreams on loopback: bombs, floods, bad bytes and quoted keys become the
documented errors (failed over before the first event, an ``error`` event after it)."""

from __future__ import annotations

import asyncio
import gzip
from typing import Any

import aiohttp
import orjson
import pytest
from anthropic.types import MessageParam
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import fakes.anthropic_script as script
from conftest import GATEWAY_KEY, PROVIDER_KEY
from fakes.gateway import build_config, running_gateway
from fakes.raw_http import Answer, RawHTTPServer, Seen, chunked, response
from fakes.upstream import FakeUpstream, Reply
from helpers import anthropic_config, envelope, openai_config, post, sse_events
from messagegate.config import Timeouts
from messagegate.config.dialect import OpenAIDialect
from messagegate.errors import GatewayError
from messagegate.providers.connection import ProtocolViolation
from messagegate.providers.openai import translate_answer
from messagegate.providers.pool import ConnectionPool, Endpoint, RequestHead
from messagegate.translate.openai_events import openai_stream
from messagegate.translate.openai_request import to_openai_request
from messagegate.translate.sse_decoder import SSEDecoder

HELLO: list[MessageParam] = [{"role": "user", "content": "Hello"}]
MiB = 1024 * 1024
SMALL_LIMITS = {"max_upstream_answer_bytes": MiB, "max_upstream_event_bytes": 64 * 1024}


def raw_config(server: RawHTTPServer, **extra: Any) -> dict[str, Any]:
    return {
        "keys": [{"key": GATEWAY_KEY, "name": "alice"}],
        "limits": SMALL_LIMITS,
        "providers": {
            "raw": {
                "kind": "anthropic",
                "base_url": f"http://127.0.0.1:{server.port}",
                "api_key": PROVIDER_KEY,
            }
        },
        "models": {"claude-test": {"routes": [{"provider": "raw", "model": "up"}]}},
        **extra,
    }


async def ask(url: str, *, stream: bool = False) -> tuple[int, bytes]:
    request = {"model": "claude-test", "max_tokens": 5, "messages": HELLO, "stream": stream}
    status, _, body = await post(url, "/v1/messages", request)
    return status, body


async def test_a_gzip_bomb_is_refused_once_past_the_answer_limit() -> None:
    bomb = gzip.compress(b"0" * (64 * MiB), compresslevel=9)
    assert len(bomb) < 100 * 1024

    def script_(connection: int, number: int, seen: Seen) -> Answer:
        return Answer(response(bomb, headers={"content-encoding": "gzip"}))

    async with (
        RawHTTPServer(script_) as server,
        running_gateway(build_config(raw_config(server))) as (url, _),
    ):
        status, body = await ask(url)
    assert status == 502
    error_type, message = envelope(body)
    assert error_type == "api_error"
    assert f"larger than {MiB} bytes decompressed" in message
    assert len(server.seen) == 2  # a retryable failure: tried again, then reported


async def test_an_answer_over_the_limit_fails_and_is_not_held() -> None:
    big = b'{"type":"message","content":"' + b"x" * (2 * MiB) + b'"}'
    async with (
        RawHTTPServer(lambda *_: Answer(response(big))) as server,
        running_gateway(build_config(raw_config(server))) as (url, _),
    ):
        status, body = await ask(url)
    assert status == 502
    assert f"sent an answer larger than {MiB} bytes" in envelope(body)[1]


async def test_the_pool_keeps_a_failed_callbacks_own_message() -> None:
    def script_(connection: int, number: int, seen: Seen) -> Answer:
        return Answer(response(b"\x1f\x8b not gzip", headers={"content-encoding": "gzip"}))

    async with RawHTTPServer(script_) as server:
        pool = ConnectionPool(max_answer=MiB)
        head = RequestHead(Endpoint.parse(f"http://127.0.0.1:{server.port}/v1/messages"), {})
        timeouts = Timeouts(connect=5, first_byte=5, idle=5, total=10)
        with pytest.raises(ProtocolViolation, match="invalid compressed body") as raised:
            await (await pool.post(head, head.encode(b"{}"), timeouts)).read()
        assert "callback" not in str(raised.value)
        pool.close()


def event(name: str, data: Any) -> bytes:
    return b"event: %s\ndata: %s\n\n" % (name.encode(), orjson.dumps(data))


START = script.events(script.message([]))[0]


async def test_an_event_without_a_line_break_is_refused_before_the_first_event() -> None:
    endless = b"event: message_start\ndata: " + b"x" * (128 * 1024)
    async with (
        RawHTTPServer(lambda *_: Answer(chunked(endless))) as server,
        running_gateway(build_config(raw_config(server))) as (url, _),
    ):
        status, body = await ask(url, stream=True)
    assert status == 502
    assert "an event over 65536 bytes" in envelope(body)[1]
    assert len(server.seen) == 2


def test_a_line_arriving_in_many_parts_is_kept_in_parts_not_rejoined() -> None:
    decoder = SSEDecoder(max_event=MiB)
    assert decoder.feed(b"data: ") == []
    for _ in range(500):
        decoder.feed(b"y" * 1000)
    # 500 parts held as they came: a growing bytes would have been copied 500 times.
    assert len(decoder._pending) == 501
    assert decoder.feed(b"\n\n") == [("message", "y" * 500_000)]
    for _ in range(MiB // 1000):
        decoder.feed(b"z" * 1000)
    with pytest.raises(GatewayError, match="an event over"):
        decoder.feed(b"z" * 1000)


async def stream_with_failure_after_first_event(
    upstream: FakeUpstream, bad: bytes, config: dict[str, Any]
) -> tuple[list[tuple[str, Any]], FakeUpstream]:
    release = asyncio.Event()
    good = script.events(script.message([{"type": "text", "text": "Hi"}]))
    upstream.script(Reply(chunks=[good[0], bad, *good[1:]], hold=release, hold_after=1))
    request = {"model": "claude-test", "max_tokens": 5, "messages": HELLO, "stream": True}
    async with (
        running_gateway(build_config(config)) as (url, _),
        aiohttp.ClientSession() as session,
        session.post(url + "/v1/messages", json=request, headers={"x-api-key": GATEWAY_KEY}) as r,
    ):
        assert r.status == 200
        first = await r.content.readuntil(b"\n\n")
        release.set()
        rest = await r.read()
    return sse_events(first + rest), upstream


@pytest.mark.parametrize(
    "bad",
    [
        b'event: content_block_delta\ndata: {"type":"content_block_delta","index":0,'
        b'"delta":{"type":"text_delta","text":"\xff\xfe"}}\n\n',
        b"event: message_delta\ndata: [1, 2]\n\n",
        b"event: message_delta\ndata: " + b"q" * (128 * 1024) + b"\n\n",
    ],
    ids=["invalid-utf8", "wrong-shape", "too-large"],
)
async def test_a_bad_event_after_the_first_is_an_error_event(
    upstream: FakeUpstream, bad: bytes
) -> None:
    config = anthropic_config(upstream, limits=SMALL_LIMITS)
    events, _ = await stream_with_failure_after_first_event(upstream, bad, config)
    assert events[0][0] == "message_start"
    assert events[-1][0] == "error"
    assert events[-1][1]["error"]["type"] == "api_error"
    assert all(name != "message_stop" for name, _ in events)


@pytest.mark.parametrize(
    "first",
    [
        b'event: message_start\ndata: {"type":"message_start","message":\xff}\n\n',
        b'event: message_start\ndata: ["not", "a", "message"]\n\n',
    ],
    ids=["invalid-utf8", "wrong-shape"],
)
async def test_a_bad_first_event_fails_over(upstream: FakeUpstream, first: bytes) -> None:
    good = script.message([{"type": "text", "text": "from the second try"}])
    upstream.script(Reply(chunks=[first]), Reply(chunks=script.events(good)))
    async with running_gateway(build_config(anthropic_config(upstream))) as (url, _):
        status, body = await ask(url, stream=True)
    assert status == 200
    events = sse_events(body)
    assert [name for name, _ in events][:: len(events) - 1] == ["message_start", "message_stop"]
    deltas = [
        data["delta"].get("text", "") for name, data in events if name == "content_block_delta"
    ]
    assert "".join(deltas) == "from the second try"
    assert len(upstream.received) == 2


async def test_configured_secrets_are_scrubbed_from_relayed_upstream_errors(
    upstream: FakeUpstream, second_upstream: FakeUpstream
) -> None:
    other_key = "sk-other-provider-secret-42"
    quoted = f"bad key {PROVIDER_KEY} (also tried {other_key})"
    upstream.script(
        Reply(
            status=400,
            json={"type": "error", "error": {"type": "invalid_request_error", "message": quoted}},
        ),
        Reply(
            chunks=[
                START,
                event(
                    "error", {"type": "error", "error": {"type": "api_error", "message": quoted}}
                ),
            ]
        ),
    )
    config = anthropic_config(upstream)
    config["providers"]["other"] = {
        "kind": "openai",
        "base_url": second_upstream.url,
        "api_key": other_key,
    }
    async with running_gateway(build_config(config)) as (url, _):
        status, json_body = await ask(url)
        _, stream_body = await ask(url, stream=True)
    assert status == 400
    assert envelope(json_body)[1] == "bad key *** (also tried ***)"
    assert b"bad key *** (also tried ***)" in stream_body
    for body in (json_body, stream_body):
        assert PROVIDER_KEY.encode() not in body
        assert other_key.encode() not in body


async def test_an_openai_error_message_quoting_the_key_is_scrubbed(upstream: FakeUpstream) -> None:
    upstream.script(Reply(status=400, json={"error": {"message": f"key {PROVIDER_KEY} is odd"}}))
    request = {"model": "gpt-test", "max_tokens": 5, "messages": HELLO}
    async with running_gateway(build_config(openai_config(upstream))) as (url, _):
        status, _, body = await post(url, "/v1/messages", request)
    assert status == 400
    assert envelope(body)[1] == "key *** is odd"


# -- fuzzing the OpenAI translation: any answer is a Message or a GatewayError, never a crash -----

_KEYS = [
    "choices", "message", "delta", "content", "tool_calls", "function", "name", "arguments",
    "id", "index", "finish_reason", "usage", "prompt_tokens", "completion_tokens", "role",
    "reasoning_content", "reasoning", "error", "type", "x_groq", "stop_reason", "code",
    "prompt_tokens_details", "cached_tokens", "refusal",
]  # fmt: skip
_SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(-5, 5)
    | st.floats(allow_nan=False)
    | st.text(max_size=4)
)
JSON = st.recursive(
    _SCALARS,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.sampled_from(_KEYS), inner, max_size=4)
    ),
    max_leaves=16,
)
CHUNK = st.dictionaries(st.sampled_from(_KEYS), JSON, max_size=5)
_REQUEST = to_openai_request(
    {"model": "m", "max_tokens": 10, "messages": HELLO, "stop_sequences": ["zz"]},
    upstream_model="up",
    dialect=OpenAIDialect(),
    max_output=None,
)
_FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@_FUZZ
@given(answer=CHUNK)
def test_fuzzed_openai_answers_translate_or_fail_cleanly(answer: dict[str, Any]) -> None:
    try:
        message = translate_answer(answer, "fuzz", "claude-test", _REQUEST, 3)
    except GatewayError:
        return
    orjson.dumps(message)


@_FUZZ
@given(chunks=st.lists(CHUNK | JSON, min_size=1, max_size=6), done=st.booleans())
def test_fuzzed_openai_streams_translate_or_fail_cleanly(chunks: list[Any], done: bool) -> None:
    out: list[bytes] = []
    relay = openai_stream(_REQUEST, client_model="claude-test", input_tokens=3, provider="fuzz")
    data = [b"data: " + orjson.dumps(chunk) + b"\n\n" for chunk in chunks]
    try:
        for part in [*data, *([b"data: [DONE]\n\n"] if done else [])]:
            out.append(relay.feed(part))
        out.append(relay.end())
    except GatewayError:
        return
    assert b"".join(out).startswith(b"event: message_start")
