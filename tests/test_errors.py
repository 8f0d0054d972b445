"""Every error path answers with Anthropic's envelope, status and a request id; no key leaks."""

from __future__ import annotations

import logging
import socket
from collections.abc import AsyncIterator, Iterator
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
from helpers import anthropic_config, envelope, error_of, get, post

HELLO: list[MessageParam] = [{"role": "user", "content": "Hello"}]
ANSWER = script.message([{"type": "text", "text": "Hi"}])
LIMIT = 4096
RATE_HEADERS = {
    "anthropic-ratelimit-requests-limit": "50",
    "anthropic-ratelimit-requests-remaining": "0",
    "anthropic-ratelimit-tokens-reset": "2026-01-01T00:00:07Z",
}


@pytest.fixture(scope="module")
async def shared() -> AsyncIterator[tuple[str, FakeUpstream]]:
    """One gateway for the tests whose requests never reach the upstream."""
    fake = FakeUpstream()
    await fake.start()
    try:
        config = build_config(anthropic_config(fake, max_body_bytes=LIMIT))
        async with running_gateway(config) as (url, _):
            yield url, fake
    finally:
        await fake.stop()


@pytest.fixture(autouse=True)
def no_key_in_logs(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    """No log line of any test here shows the provider's key (or the gateway's)."""
    caplog.set_level(logging.INFO, logger="messagegate")
    yield
    for record in caplog.records:
        text = record.getMessage() + (record.exc_text or "")
        assert PROVIDER_KEY not in text
        assert GATEWAY_KEY not in text


def assert_no_key(headers: dict[str, str], body: bytes) -> None:
    assert PROVIDER_KEY not in body.decode(errors="replace")
    assert all(PROVIDER_KEY not in v for v in headers.values())


def body(**fields: Any) -> dict[str, Any]:
    return {"model": "claude-test", "max_tokens": 100, "messages": HELLO, **fields}


def user(*blocks: dict[str, Any]) -> list[dict[str, Any]]:
    return [{"role": "user", "content": list(blocks)}]


INVALID = {
    "missing max_tokens": ({"model": "claude-test", "messages": HELLO}, "max_tokens"),
    "missing model": ({"max_tokens": 10, "messages": HELLO}, "model"),
    "missing messages": ({"model": "claude-test", "max_tokens": 10}, "messages"),
    "max_tokens not int": (body(max_tokens="100"), "max_tokens"),
    "max_tokens zero": (body(max_tokens=0), "max_tokens"),
    "messages not a list": (body(messages="Hello"), "messages"),
    "bad role": (body(messages=[{"role": "robot", "content": "x"}]), "messages.0.role"),
    "content not str or list": (
        body(messages=[{"role": "user", "content": 7}]),
        "messages.0.content",
    ),
    "block without type": (body(messages=user({"text": "x"})), "messages.0.content.0.type"),
    "text block without text": (
        body(messages=user({"type": "text"})),
        "messages.0.content.0.text",
    ),
    "tool_use without id": (
        body(
            messages=[
                {"role": "assistant", "content": [{"type": "tool_use", "name": "f", "input": {}}]}
            ]
        ),
        "messages.0.content.0.id",
    ),
    "tool_result bad nested block": (
        body(
            messages=user(
                {"type": "tool_result", "tool_use_id": "t1", "content": [{"type": "text"}]}
            )
        ),
        "messages.0.content.0.content.0.text",
    ),
    "image base64 without data": (
        body(
            messages=user(
                {"type": "image", "source": {"type": "base64", "media_type": "image/png"}}
            )
        ),
        "messages.0.content.0.source.data",
    ),
    "image url without url": (
        body(messages=user({"type": "image", "source": {"type": "url"}})),
        "messages.0.content.0.source.url",
    ),
    "image source not an object": (
        body(messages=user({"type": "image", "source": "http://x/y.png"})),
        "messages.0.content.0.source",
    ),
    "system not str or blocks": (body(system=5), "system"),
    "system block without text": (body(system=[{"type": "text"}]), "system.0.text"),
    "temperature out of range": (body(temperature=2.5), "temperature"),
    "top_k not int": (body(top_k="x"), "top_k"),
    "stop_sequences not strings": (body(stop_sequences=[1]), "stop_sequences.0"),
    "tool without input_schema": (body(tools=[{"name": "f"}]), "tools.0.input_schema"),
    "bad tool_choice": (body(tool_choice={"type": "sometimes"}), "tool_choice.type"),
    "bad thinking type": (body(thinking={"type": "deep"}), "thinking.type"),
    "metadata not an object": (body(metadata="u1"), "metadata"),
    "stream not bool": (body(stream="yes"), "stream"),
}


@pytest.mark.parametrize(("payload", "field"), INVALID.values(), ids=INVALID.keys())
async def test_invalid_request_400_names_the_field(
    shared: tuple[str, FakeUpstream], payload: dict[str, Any], field: str
) -> None:
    url, upstream = shared
    status, headers, raw = await post(url, "/v1/messages", payload)
    assert status == 400
    error_type, message = envelope(raw)
    assert error_type == "invalid_request_error"
    assert message.startswith(f"{field}:"), message
    assert headers["request-id"].startswith("req_")
    assert upstream.received == []


@pytest.mark.parametrize(
    "raw",
    [b"{not json", b"", b'{"model": "claude-test",', b"[1, 2]", b'"text"'],
    ids=["garbage", "empty", "truncated", "array", "string"],
)
async def test_malformed_json_is_400(shared: tuple[str, FakeUpstream], raw: bytes) -> None:
    url, upstream = shared
    status, headers, answer = await post(url, "/v1/messages", raw)
    assert status == 400
    assert envelope(answer)[0] == "invalid_request_error"
    assert headers["request-id"].startswith("req_")
    assert upstream.received == []


async def _chunked(data: bytes) -> AsyncIterator[bytes]:
    for start in range(0, len(data), 1000):
        yield data[start : start + 1000]


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
async def test_body_over_the_limit_is_413(shared: tuple[str, FakeUpstream], chunked: bool) -> None:
    url, upstream = shared
    raw = orjson.dumps(body(messages=[{"role": "user", "content": "x" * LIMIT}]))
    headers = {"x-api-key": GATEWAY_KEY, "content-type": "application/json"}
    async with aiohttp.ClientSession() as session:
        data: Any = _chunked(raw) if chunked else raw
        async with session.post(url + "/v1/messages", data=data, headers=headers) as response:
            assert (response.request_info.headers.get("transfer-encoding") == "chunked") is chunked
            status, answer = response.status, await response.read()
            request_id = response.headers["request-id"]
    assert status == 413
    assert envelope(answer)[0] == "request_too_large"
    assert request_id.startswith("req_")
    assert upstream.received == []


async def test_body_under_the_limit_passes(upstream: FakeUpstream) -> None:
    upstream.script(script.reply(ANSWER))
    config = build_config(anthropic_config(upstream, max_body_bytes=LIMIT))
    async with running_gateway(config) as (url, _):
        status, _, _ = await post(url, "/v1/messages", body())
    assert status == 200


async def test_unknown_model_is_404(upstream: FakeUpstream, sdk: SDK) -> None:
    async with running_gateway(build_config(anthropic_config(upstream))) as (url, _):
        with pytest.raises(anthropic.NotFoundError) as caught:
            await sdk(url).messages.create(model="claude-nope", max_tokens=10, messages=HELLO)
        status, _, raw = await post(url, "/v1/messages", body(model="claude-nope", stream=True))
    assert error_of(caught.value)["type"] == "not_found_error"
    assert "claude-nope" in error_of(caught.value)["message"]
    assert status == 404
    assert envelope(raw)[0] == "not_found_error"
    assert upstream.received == []


@pytest.mark.parametrize(
    ("method", "path"),
    [("GET", "/nope"), ("GET", "/v1/nope"), ("POST", "/v2/messages"), ("DELETE", "/v1/models")],
)
async def test_unknown_path_is_404_envelope(
    shared: tuple[str, FakeUpstream], method: str, path: str
) -> None:
    status, headers, raw = await get(shared[0], path, method=method)
    assert status == 404
    assert headers["content-type"] == "application/json"
    assert envelope(raw)[0] == "not_found_error"
    assert headers["request-id"].startswith("req_")


async def test_upstream_429_is_relayed_with_retry_after_and_rate_limit_headers(
    upstream: FakeUpstream, sdk: SDK
) -> None:
    upstream.default = script.error_reply(
        429,
        "rate_limit_error",
        "Number of request tokens has exceeded your per-minute rate limit",
        headers={"retry-after": "7", **RATE_HEADERS},
    )
    async with running_gateway(build_config(anthropic_config(upstream))) as (url, _):
        with pytest.raises(anthropic.RateLimitError) as caught:
            await sdk(url).messages.create(model="claude-test", max_tokens=10, messages=HELLO)
        status, headers, raw = await post(url, "/v1/messages", body(stream=True))
    response = caught.value.response
    assert response.status_code == 429
    assert error_of(caught.value)["type"] == "rate_limit_error"
    assert response.headers["retry-after"] == "7"
    for name, value in RATE_HEADERS.items():
        assert response.headers[name] == value
        assert headers[name] == value
    assert status == 429
    assert headers["retry-after"] == "7"
    assert envelope(raw)[0] == "rate_limit_error"


@pytest.mark.parametrize(
    ("reply", "status", "error_type"),
    [
        (script.error_reply(529, "overloaded_error", "Overloaded"), 529, "overloaded_error"),
        (script.error_reply(503, "api_error", "Service Unavailable"), 529, "overloaded_error"),
        (Reply(status=503, body=b"upstream connect error"), 529, "overloaded_error"),
        (script.error_reply(500, "api_error", "Internal server error"), 500, "api_error"),
        (Reply(status=500, body=b"<html>oops</html>"), 500, "api_error"),
        (Reply(status=502, body=b"<html>Bad Gateway</html>"), 502, "api_error"),
    ],
    ids=["529", "503-json", "503-text", "500-json", "500-html", "502-html"],
)
@pytest.mark.parametrize("stream", [False, True], ids=["create", "stream"])
async def test_upstream_server_errors_map_to_anthropic_statuses(
    upstream: FakeUpstream, reply: Reply, status: int, error_type: str, stream: bool
) -> None:
    upstream.default = reply
    async with running_gateway(build_config(anthropic_config(upstream))) as (url, _):
        got, headers, raw = await post(url, "/v1/messages", body(stream=stream))
    assert got == status
    assert headers["content-type"] == "application/json"
    assert envelope(raw)[0] == error_type
    assert headers["request-id"].startswith("req_")
    assert upstream.received


async def test_unreachable_upstream_is_502(upstream: FakeUpstream, sdk: SDK) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed_port = sock.getsockname()[1]
    config = anthropic_config(upstream)
    config["providers"]["anth"]["base_url"] = f"http://127.0.0.1:{closed_port}"
    async with running_gateway(build_config(config)) as (url, _):
        with pytest.raises(anthropic.APIStatusError) as caught:
            await sdk(url).messages.create(model="claude-test", max_tokens=10, messages=HELLO)
        status, headers, raw = await post(url, "/v1/messages", body(stream=True))
    assert caught.value.status_code == 502
    assert error_of(caught.value)["type"] == "api_error"
    assert status == 502
    assert envelope(raw)[0] == "api_error"
    assert_no_key(headers, raw)


async def test_anthropic_400_error_body_is_relayed_byte_for_byte(upstream: FakeUpstream) -> None:
    upstream_body = (
        b'{"type": "error",  "error": {"type": "invalid_request_error", '
        b'"message": "messages.1.content.0: unexpected `tool_use_id`"}, "request_id": "req_up1"}'
    )
    upstream.script(Reply(status=400, body=upstream_body), Reply(status=400, body=upstream_body))
    async with running_gateway(build_config(anthropic_config(upstream))) as (url, _):
        plain = await post(url, "/v1/messages", body())
        streamed = await post(url, "/v1/messages", body(stream=True))
    for status, headers, raw in (plain, streamed):
        assert status == 400
        assert raw == upstream_body
        assert headers["request-id"].startswith("req_")
    assert len(upstream.received) == 2


@pytest.mark.parametrize("status", [401, 403])
async def test_provider_credentials_rejected_is_502_without_the_key(
    upstream: FakeUpstream, sdk: SDK, status: int
) -> None:
    leaky = f"invalid x-api-key: {PROVIDER_KEY}"
    upstream.default = script.error_reply(status, "authentication_error", leaky)
    async with running_gateway(build_config(anthropic_config(upstream))) as (url, _):
        with pytest.raises(anthropic.APIStatusError) as caught:
            await sdk(url).messages.create(model="claude-test", max_tokens=10, messages=HELLO)
        got, headers, raw = await post(url, "/v1/messages", body(stream=True))
    assert caught.value.status_code == 502
    assert error_of(caught.value)["type"] == "api_error"
    assert got == 502
    assert envelope(raw)[0] == "api_error"
    assert_no_key(headers, raw)
    assert_no_key(dict(caught.value.response.headers), caught.value.response.content)
    assert upstream.received[0].headers["x-api-key"] == PROVIDER_KEY


async def test_rate_limit_headers_are_relayed_on_success(upstream: FakeUpstream, sdk: SDK) -> None:
    upstream.script(
        script.reply(ANSWER, headers=RATE_HEADERS),
        script.stream_reply(ANSWER, headers=RATE_HEADERS),
    )
    async with running_gateway(build_config(anthropic_config(upstream))) as (url, _):
        client = sdk(url)
        plain = await client.messages.with_raw_response.create(
            model="claude-test", max_tokens=10, messages=HELLO
        )
        async with client.messages.stream(
            model="claude-test", max_tokens=10, messages=HELLO
        ) as stream:
            await stream.get_final_message()
            streamed_headers = stream.response.headers
    for headers in (plain.headers, streamed_headers):
        for name, value in RATE_HEADERS.items():
            assert headers[name] == value


async def test_the_provider_key_appears_in_no_answer(upstream: FakeUpstream, sdk: SDK) -> None:
    upstream.script(
        script.reply(ANSWER),
        script.stream_reply(ANSWER),
        Reply(json={"input_tokens": 3}),
    )
    async with running_gateway(build_config(anthropic_config(upstream))) as (url, _):
        answers = [
            await post(url, "/v1/messages", body()),
            await post(url, "/v1/messages", body(stream=True)),
            await post(
                url, "/v1/messages/count_tokens", {"model": "claude-test", "messages": HELLO}
            ),
            await get(url, "/v1/models"),
            await get(url, "/v1/gateway/routes"),
            await get(url, "/"),
        ]
    for status, headers, raw in answers:
        assert status == 200
        assert_no_key(headers, raw)


@pytest.mark.parametrize("raw", [b"<html>ok</html>", b"[1, 2]"], ids=["not-json", "not-an-object"])
async def test_unusable_upstream_answer_is_502(upstream: FakeUpstream, raw: bytes) -> None:
    upstream.default = Reply(body=raw)
    async with running_gateway(build_config(anthropic_config(upstream))) as (url, _):
        status, headers, answer = await post(url, "/v1/messages", body())
    assert status == 502
    assert envelope(answer)[0] == "api_error"
    assert headers["request-id"].startswith("req_")
