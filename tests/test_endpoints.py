"""Auth on /v1/*, the unauthenticated root and health endpoints, models and count_tokens."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from typing import Any

import anthropic
import orjson
import pytest
from anthropic.types import MessageParam, TextBlockParam, ToolParam

import fakes.anthropic_script as script
from conftest import GATEWAY_KEY, PROVIDER_KEY, SDK
from fakes.gateway import build_config, running_gateway
from fakes.upstream import FakeUpstream, Received, Reply
from helpers import anthropic_config, envelope, error_of, first_text, get, post
from messagegate.config import ApiKey, Secret
from messagegate.errors import AuthenticationFailed
from messagegate.server.app import GatewayApp
from messagegate.server.auth import KeyChecker

HELLO: list[MessageParam] = [{"role": "user", "content": "Hello"}]
ANSWER = script.message([{"type": "text", "text": "Hi"}])
MESSAGE: dict[str, Any] = {"model": "claude-test", "max_tokens": 10, "messages": HELLO}
COUNT = {"model": "claude-test", "messages": HELLO}
# Every /v1 endpoint, with a body for the POSTs.
V1 = [
    ("GET", "/v1/models", None),
    ("GET", "/v1/models/claude-test", None),
    ("POST", "/v1/messages", MESSAGE),
    ("POST", "/v1/messages?beta=true", {**MESSAGE, "stream": True}),
    ("POST", "/v1/messages/count_tokens", COUNT),
    ("GET", "/v1/gateway/routes", None),
]
THREE_MODELS = {
    "claude-a": {
        "routes": [{"provider": "anth", "model": "up-a"}],
        "display_name": "Claude A",
        "created_at": "2025-02-01T00:00:00Z",
    },
    "claude-b": {"routes": [{"provider": "anth", "model": "up-b"}]},
    "claude-c": {"routes": [{"provider": "anth", "model": "up-c"}]},
}


def answering(upstream: FakeUpstream) -> None:
    """Answer every upstream call by what it is, so any number of calls succeed."""

    def respond(received: Received) -> Reply:
        if received.path.endswith("/count_tokens"):
            return Reply(json={"input_tokens": 5})
        if received.json.get("stream"):
            return script.stream_reply(ANSWER)
        return script.reply(ANSWER)

    upstream.responder = respond


async def call(
    url: str, method: str, path: str, payload: Any, headers: dict[str, str]
) -> tuple[int, bytes]:
    if payload is None:
        status, _, raw = await get(url, path, key=None, method=method, headers=headers)
    else:
        status, _, raw = await post(url, path, payload, headers=headers, key=None)
    return status, raw


@pytest.fixture
async def gateway(upstream: FakeUpstream) -> AsyncIterator[str]:
    answering(upstream)
    async with running_gateway(build_config(anthropic_config(upstream))) as (url, _):
        yield url


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"x-api-key": "wrong-key"},
        {"x-api-key": GATEWAY_KEY + "x"},
        {"authorization": "Bearer wrong-key"},
        {"authorization": GATEWAY_KEY},
        {"x-api-key": PROVIDER_KEY},
    ],
    ids=["none", "wrong", "longer", "wrong-bearer", "no-scheme", "provider-key"],
)
async def test_every_v1_endpoint_rejects_a_missing_or_wrong_key(
    gateway: str, upstream: FakeUpstream, headers: dict[str, str]
) -> None:
    for method, path, payload in V1:
        status, raw = await call(gateway, method, path, payload, headers)
        assert status == 401, path
        assert envelope(raw)[0] == "authentication_error"
    assert upstream.received == []


@pytest.mark.parametrize(
    "headers",
    [{"x-api-key": GATEWAY_KEY}, {"authorization": f"Bearer {GATEWAY_KEY}"}],
    ids=["x-api-key", "bearer"],
)
async def test_every_v1_endpoint_accepts_the_key(
    gateway: str, upstream: FakeUpstream, headers: dict[str, str]
) -> None:
    for method, path, payload in V1:
        status, _ = await call(gateway, method, path, payload, headers)
        assert status == 200, path
    assert len(upstream.received) == 3
    assert all(r.headers["x-api-key"] == PROVIDER_KEY for r in upstream.received)


async def test_sdk_with_wrong_key_gets_authentication_error(gateway: str, sdk: SDK) -> None:
    with pytest.raises(anthropic.AuthenticationError) as caught:
        await sdk(gateway, key="wrong").messages.create(**MESSAGE)
    assert error_of(caught.value)["type"] == "authentication_error"
    with pytest.raises(anthropic.AuthenticationError):
        await sdk(gateway, key="wrong").models.list()


async def test_sdk_with_bearer_token_is_accepted(gateway: str, sdk: SDK) -> None:
    client = sdk(gateway, key=None, auth_token=GATEWAY_KEY)
    message = await client.messages.create(**MESSAGE)
    assert first_text(message) == "Hi"


async def test_without_configured_keys_the_gateway_is_open(upstream: FakeUpstream) -> None:
    answering(upstream)
    config = anthropic_config(upstream)
    del config["keys"]
    async with running_gateway(build_config(config)) as (url, _):
        for method, path, payload in V1:
            status, _ = await call(url, method, path, payload, {})
            assert status == 200, path
    assert len(upstream.received) == 3


@pytest.mark.parametrize("method", ["GET", "HEAD"])
async def test_root_answers_200_without_auth(gateway: str, method: str) -> None:
    status, headers, raw = await get(gateway, "/", key=None, method=method)
    assert status == 200
    assert headers["request-id"].startswith("req_")
    assert raw == (b"" if method == "HEAD" else b'{"service":"messagegate"}')


async def test_health_says_ready_without_auth(gateway: str) -> None:
    status, headers, raw = await get(gateway, "/health", key=None)
    assert status == 200
    assert raw == b'{"status":"ok"}'
    assert headers["request-id"].startswith("req_")


async def test_models_list_is_the_configured_models(upstream: FakeUpstream, sdk: SDK) -> None:
    config = build_config(anthropic_config(upstream, models=THREE_MODELS))
    async with running_gateway(config) as (url, _):
        client = sdk(url)
        page = await client.models.list()
        first = await client.models.list(limit=1)
        after = await client.models.list(limit=1, after_id="claude-a")
        before = await client.models.list(before_id="claude-c")
        model = await client.models.retrieve("claude-a")
        plain = await client.models.retrieve("claude-b")
        with pytest.raises(anthropic.NotFoundError):
            await client.models.retrieve("claude-z")
        status, _, raw = await get(url, "/v1/models")
    assert [m.id for m in page.data] == list(THREE_MODELS)
    assert (page.has_more, page.first_id, page.last_id) == (False, "claude-a", "claude-c")
    assert all(m.type == "model" for m in page.data)
    assert ([m.id for m in first.data], first.has_more) == (["claude-a"], True)
    assert ([m.id for m in after.data], after.has_more) == (["claude-b"], True)
    assert [m.id for m in before.data] == ["claude-a", "claude-b"]
    assert (model.id, model.display_name) == ("claude-a", "Claude A")
    assert model.created_at.isoformat().startswith("2025-02-01")
    assert plain.display_name == "claude-b"
    assert status == 200
    listed = orjson.loads(raw)
    assert set(listed) >= {"data", "has_more", "first_id", "last_id"}
    assert set(listed["data"][0]) >= {"type", "id", "display_name", "created_at"}
    assert upstream.received == []


async def test_models_list_rejects_a_bad_limit(gateway: str) -> None:
    status, _, raw = await get(gateway, "/v1/models?limit=0")
    assert status == 400
    assert envelope(raw)[0] == "invalid_request_error"


@pytest.mark.parametrize("beta", [False, True])
async def test_count_tokens_is_forwarded_to_the_anthropic_upstream(
    upstream: FakeUpstream, sdk: SDK, beta: bool
) -> None:
    upstream.script(Reply(json={"input_tokens": 42}))
    tools: list[ToolParam] = [{"name": "f", "description": "d", "input_schema": {"type": "object"}}]
    system: list[TextBlockParam] = [
        {"type": "text", "text": "Be brief.", "cache_control": {"type": "ephemeral"}}
    ]
    async with running_gateway(build_config(anthropic_config(upstream))) as (url, _):
        result = await sdk(url).messages.count_tokens(
            model="claude-test",
            messages=HELLO,
            system=system,
            tools=tools,
            extra_headers={
                "anthropic-beta": "token-counting-2024-11-01",
                "anthropic-version": "2023-06-01",
            },
            extra_query={"beta": "true"} if beta else None,
        )
    assert result.input_tokens == 42
    received = upstream.received[0]
    assert received.path == "/v1/messages/count_tokens"
    assert received.query == ({"beta": "true"} if beta else {})
    assert received.json == {
        "model": "claude-upstream-1",
        "messages": HELLO,
        "system": system,
        "tools": tools,
    }
    assert received.headers["x-api-key"] == PROVIDER_KEY
    assert received.headers["anthropic-beta"] == "token-counting-2024-11-01"
    assert received.headers["anthropic-version"] == "2023-06-01"


async def test_count_tokens_validates_and_relays_upstream_errors(upstream: FakeUpstream) -> None:
    upstream.script(script.error_reply(400, "invalid_request_error", "tools.0: bad"))
    async with running_gateway(build_config(anthropic_config(upstream))) as (url, _):
        missing = await post(url, "/v1/messages/count_tokens", {"model": "claude-test"})
        unknown = await post(url, "/v1/messages/count_tokens", {**COUNT, "model": "nope"})
        relayed = await post(url, "/v1/messages/count_tokens", COUNT)
    assert missing[0] == 400
    assert envelope(missing[2]) == ("invalid_request_error", "messages: Field required")
    assert unknown[0] == 404
    assert envelope(unknown[2])[0] == "not_found_error"
    assert relayed[0] == 400
    assert envelope(relayed[2]) == ("invalid_request_error", "tools.0: bad")
    assert len(upstream.received) == 1


async def test_health_is_503_until_the_gateway_has_started(upstream: FakeUpstream) -> None:
    app = GatewayApp(build_config(anthropic_config(upstream)))
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Any) -> None:
        sent.append(dict(message))

    scope = {"type": "http", "method": "GET", "path": "/health", "headers": [], "query_string": b""}
    await app(scope, receive, send)
    assert sent[0]["status"] == 503
    assert (b"request-id", sent[0]["headers"][-1][1]) == sent[0]["headers"][-1]
    assert sent[1]["body"] == b'{"status":"starting"}'


@pytest.mark.parametrize("presented", ["key-one", "key-three", "key-none", "key-one "])
def test_keys_are_looked_up_by_their_digest(presented: str) -> None:
    keys = [ApiKey(key=Secret(f"key-{n}"), name=n) for n in ("one", "two", "three")]
    checker = KeyChecker(keys)
    # What is compared is a SHA-256 of the presented key, so timing tells nothing about a key.
    assert set(checker.entries) == {hashlib.sha256(k.key.encode()).digest() for k in keys}
    if presented in ("key-one", "key-three"):
        found = checker.check({"x-api-key": presented})
        assert found is not None
        assert found.key == presented
    else:
        with pytest.raises(AuthenticationFailed, match="invalid x-api-key"):
            checker.check({"x-api-key": presented})


@pytest.mark.parametrize(
    "reply",
    [Reply(body=b"<html>hello</html>"), Reply(json=[1]), Reply(json={"tokens": 3})],
    ids=["not-json", "not-an-object", "no-input_tokens"],
)
async def test_count_tokens_unusable_upstream_answer_is_502(
    upstream: FakeUpstream, reply: Reply
) -> None:
    upstream.default = reply
    async with running_gateway(build_config(anthropic_config(upstream))) as (url, _):
        status, _, raw = await post(url, "/v1/messages/count_tokens", COUNT)
    assert status == 502
    assert envelope(raw)[0] == "api_error"
