"""`request_defaults` (gateway-wide and per key) and `aliases`, through the gateway."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Callable
from typing import Any

import anthropic
import orjson
import pytest
from anthropic.types import Message, MessageParam

import fakes.anthropic_script as script
from conftest import GATEWAY_KEY, PROVIDER_KEY
from fakes import openai_script as oai
from fakes.gateway import build_config, running_gateway
from fakes.upstream import FakeUpstream, Reply
from helpers import envelope, get, post, sse_events
from messagegate.config import ConfigError

HELLO: list[MessageParam] = [{"role": "user", "content": "Hello"}]
BOB_KEY = "mg-bob-key-9876543210"


def config(anth: FakeUpstream, openai: FakeUpstream, **extra: Any) -> dict[str, Any]:
    raw: dict[str, Any] = {
        "keys": [
            {"key": GATEWAY_KEY, "name": "alice", "request_defaults": {"model": "fast"}},
            {"key": BOB_KEY, "name": "bob"},
        ],
        "providers": {
            "anth": {"kind": "anthropic", "base_url": anth.url, "api_key": PROVIDER_KEY},
            "oai": {"kind": "openai", "base_url": openai.url + "/v1", "api_key": PROVIDER_KEY},
        },
        "models": {
            "big": {"routes": [{"provider": "anth", "model": "big-upstream"}]},
            "small": {"routes": [{"provider": "oai", "model": "small-upstream"}]},
        },
        "aliases": {"latest": "big", "fast": "small"},
        "request_defaults": {"model": "latest", "max_tokens": 111},
    }
    raw.update(extra)
    return raw


Gateway = tuple[str, FakeUpstream, FakeUpstream]


@pytest.fixture
async def gateway(upstream: FakeUpstream, second_upstream: FakeUpstream) -> AsyncIterator[Gateway]:
    message = script.message([{"type": "text", "text": "hi"}])
    upstream.responder = lambda received: (
        script.stream_reply(message) if received.json.get("stream") else script.reply(message)
    )
    second_upstream.responder = lambda received: (
        Reply(chunks=oai.chunks("small-upstream", "hi", [], usage=True))
        if received.json.get("stream")
        else Reply(json=oai.completion("small-upstream", "hi", []))
    )
    async with running_gateway(build_config(config(upstream, second_upstream))) as (url, _):
        yield url, upstream, second_upstream


def answered_model(raw: bytes, stream: bool) -> str:
    if stream:
        event, data = sse_events(raw)[0]
        assert event == "message_start"
        return str(data["message"]["model"])
    return str(orjson.loads(raw)["model"])


@pytest.mark.parametrize("stream", [False, True])
async def test_a_keys_default_model_wins_over_the_gateways(gateway: Gateway, stream: bool) -> None:
    url, anth, openai = gateway
    status, headers, raw = await post(url, "/v1/messages", {"messages": HELLO, "stream": stream})
    assert status == 200, raw
    assert headers["x-messagegate-provider"] == "oai"
    assert answered_model(raw, stream) == "small"  # alice's `fast`, the model that answered
    assert openai.received[0].json["max_tokens"] == 111  # the gateway's default
    assert openai.received[0].json["model"] == "small-upstream"
    assert not anth.received


@pytest.mark.parametrize("stream", [False, True])
async def test_without_a_keys_default_the_gateways_applies(gateway: Gateway, stream: bool) -> None:
    url, anth, _ = gateway
    body = {"messages": HELLO, "stream": stream}
    status, headers, raw = await post(url, "/v1/messages", body, key=BOB_KEY)
    assert status == 200, raw
    assert headers["x-messagegate-provider"] == "anth"
    assert answered_model(raw, stream) == "big"
    sent = anth.received[0].json
    assert (sent["model"], sent["max_tokens"]) == ("big-upstream", 111)


async def test_a_requests_own_values_win_over_every_default(gateway: Gateway) -> None:
    url, anth, _ = gateway
    body = {"model": "big", "max_tokens": 7, "messages": HELLO}
    status, _, raw = await post(url, "/v1/messages", body)
    assert status == 200, raw
    assert anth.received[0].json["max_tokens"] == 7


@pytest.mark.parametrize("stream", [False, True])
async def test_an_alias_is_answered_by_the_model_it_names(
    gateway: Gateway, sdk: Callable[..., anthropic.AsyncAnthropic], stream: bool
) -> None:
    url, anth, _ = gateway
    client = sdk(url)
    message: Message
    if stream:
        async with client.messages.stream(model="latest", max_tokens=5, messages=HELLO) as events:
            message = await events.get_final_message()
    else:
        message = await client.messages.create(model="latest", max_tokens=5, messages=HELLO)
    assert message.model == "big"
    assert anth.received[0].json["model"] == "big-upstream"


async def test_count_tokens_takes_the_default_model_too(gateway: Gateway) -> None:
    url, _, openai = gateway
    status, headers, raw = await post(url, "/v1/messages/count_tokens", {"messages": HELLO})
    assert status == 200, raw
    assert headers["x-messagegate-provider"] == "oai"
    assert orjson.loads(raw)["input_tokens"] > 0
    assert not openai.received  # counted locally for an OpenAI-compatible route


async def test_models_lists_the_aliases_after_the_models(gateway: Gateway) -> None:
    url, _, _ = gateway
    status, _, raw = await get(url, "/v1/models")
    assert status == 200
    assert [m["id"] for m in orjson.loads(raw)["data"]] == ["big", "small", "latest", "fast"]
    status, _, raw = await get(url, "/v1/models/fast")
    assert status == 200
    assert orjson.loads(raw)["id"] == "fast"


@pytest.mark.parametrize("missing", ["model", "max_tokens"])
async def test_without_a_default_a_missing_field_is_a_400_naming_it(
    upstream: FakeUpstream, second_upstream: FakeUpstream, missing: str
) -> None:
    raw_config = config(upstream, second_upstream)
    raw_config["keys"][0].pop("request_defaults")
    raw_config["request_defaults"] = {"max_tokens": 5} if missing == "model" else {"model": "big"}
    body = {"model": "big", "max_tokens": 5, "messages": HELLO}
    del body[missing]
    async with running_gateway(build_config(raw_config)) as (url, _):
        status, _, raw = await post(url, "/v1/messages", body)
    assert status == 400
    assert envelope(raw) == ("invalid_request_error", f"{missing}: Field required")
    assert not upstream.received


@pytest.mark.parametrize(
    ("extra", "problem"),
    [
        ({"aliases": {"x": "nope"}}, "aliases.x: expected the name of a configured model"),
        ({"aliases": {"big": "small"}}, "aliases.big: 'big' is already a model's name"),
        ({"request_defaults": {"model": "nope"}}, "request_defaults.model: unknown model 'nope'"),
        (
            {"request_defaults": {"max_tokens": 0}},
            "request_defaults.max_tokens: must be a positive",
        ),
    ],
)
def test_a_wrong_alias_or_default_names_its_key_path(extra: dict[str, Any], problem: str) -> None:
    raw_config = config(FakeUpstream(), FakeUpstream(), **extra)
    with pytest.raises(ConfigError, match=re.escape(problem)):
        build_config(raw_config)


def test_a_keys_default_model_must_exist() -> None:
    raw_config = config(FakeUpstream(), FakeUpstream())
    raw_config["keys"][1]["request_defaults"] = {"model": "nope"}
    with pytest.raises(ConfigError, match=re.escape("keys.1.request_defaults.model: unknown")):
        build_config(raw_config)


async def test_the_access_log_names_the_model_an_alias_means(
    gateway: Gateway, caplog: pytest.LogCaptureFixture
) -> None:
    url, _, _ = gateway
    caplog.set_level("INFO", logger="messagegate.access")
    await post(url, "/v1/messages", {"model": "latest", "max_tokens": 5, "messages": HELLO})
    line = next(r.getMessage() for r in caplog.records if r.name == "messagegate.access")
    assert "model=big alias=latest" in line
    assert "fallback_model" not in line
