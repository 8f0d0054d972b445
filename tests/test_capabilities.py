"""The pre-flight: a route whose capabilities a request exceeds is skipped; none left is a 400."""

from __future__ import annotations

import base64
import re
from collections.abc import AsyncIterator, Callable
from typing import Any

import anthropic
import orjson
import pydantic
import pytest
from anthropic.types import MessageParam

import fakes.anthropic_script as script
from conftest import GATEWAY_KEY, PROVIDER_KEY
from fakes import openai_script as oai
from fakes.gateway import build_config, running_gateway
from fakes.upstream import FakeUpstream, Reply
from helpers import envelope, post, sse_events
from messagegate.config import Capabilities, ConfigError
from messagegate.routing.capabilities import floor, within

HELLO: list[MessageParam] = [{"role": "user", "content": "Hello"}]
PIXEL = base64.b64encode(b"\x89PNG\r\n\x1a\n" + b"\0" * 16).decode()
IMAGE = {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PIXEL}}
PDF = {
    "type": "document",
    "source": {"type": "base64", "media_type": "application/pdf", "data": PIXEL},
}
TOOL = {"name": "lookup", "input_schema": {"type": "object", "properties": {}}}
CITY_SCHEMA = {
    "type": "object",
    "properties": {"city": {"type": "string"}},
    "required": ["city"],
    "additionalProperties": False,
}
TEXT_ONLY = {"vision": False, "pdf": False, "tools": False, "thinking": False}


def config(anth: FakeUpstream, openai: FakeUpstream) -> dict[str, Any]:
    a = {"provider": "anth", "model": "a-model"}
    o = {"provider": "oai", "model": "o-model"}
    return {
        "keys": [{"key": GATEWAY_KEY, "name": "alice"}],
        "providers": {
            "anth": {"kind": "anthropic", "base_url": anth.url, "api_key": PROVIDER_KEY},
            "oai": {"kind": "openai", "base_url": openai.url + "/v1", "api_key": PROVIDER_KEY},
            "ds": {
                "kind": "openai",
                "preset": "deepseek",
                "base_url": openai.url + "/v1",
                "api_key": PROVIDER_KEY,
            },
        },
        "models": {
            "anth-first": {"routes": [a, o]},
            "oai-first": {"routes": [o | {"capabilities": TEXT_ONLY}, a]},
            "ds-first": {"routes": [{"provider": "ds", "model": "d-model"}, a]},
            "nowhere": {"routes": [a, o | {"capabilities": {"vision": False}}]},
        },
    }


Gateway = tuple[str, FakeUpstream, FakeUpstream]


@pytest.fixture
async def mixed(upstream: FakeUpstream, second_upstream: FakeUpstream) -> AsyncIterator[Gateway]:
    """`upstream` is Anthropic-native, `second_upstream` OpenAI-compatible; both answer text."""
    upstream.default = script.reply(script.message([{"type": "text", "text": "from anth"}]))
    second_upstream.default = Reply(json=oai.completion("o-model", "from oai", []))
    async with running_gateway(build_config(config(upstream, second_upstream))) as (url, _):
        yield url, upstream, second_upstream


def body(model: str, **fields: Any) -> dict[str, Any]:
    return {"model": model, "max_tokens": 20, "messages": HELLO} | fields


def with_content(*blocks: dict[str, Any]) -> list[dict[str, Any]]:
    return [{"role": "user", "content": [*blocks, {"type": "text", "text": "what is this?"}]}]


def tool_result_with(block: dict[str, Any]) -> list[Any]:
    call = {"type": "tool_use", "id": "toolu_1", "name": "lookup", "input": {}}
    result = {"type": "tool_result", "tool_use_id": "toolu_1", "content": [block]}
    return [
        *HELLO,
        {"role": "assistant", "content": [call]},
        {"role": "user", "content": [result]},
    ]


CASES: dict[str, tuple[dict[str, Any], str]] = {
    "temperature above Anthropic's 1.0": (body("anth-first", temperature=1.5), "oai"),
    "five stop sequences, OpenAI takes four": (
        body("oai-first", stop_sequences=["a", "b", "c", "d", "e"]),
        "anth",
    ),
    "an image on a text-only route": (body("oai-first", messages=with_content(IMAGE)), "anth"),
    "an image in a tool result": (body("oai-first", messages=tool_result_with(IMAGE)), "anth"),
    "a PDF on a route without pdf": (body("oai-first", messages=with_content(PDF)), "anth"),
    "tools on a route without them": (body("oai-first", tools=[TOOL]), "anth"),
    "thinking on a route without it": (
        body("oai-first", thinking={"type": "enabled", "budget_tokens": 1024}),
        "anth",
    ),
    "structured output on DeepSeek": (
        body("ds-first", output_config={"format": {"type": "json_schema", "schema": CITY_SCHEMA}}),
        "anth",
    ),
    # Within the limits, the first route serves: the skips above are the capabilities' doing.
    "temperature within Anthropic's range": (body("anth-first", temperature=1.0), "anth"),
    "four stop sequences": (body("oai-first", stop_sequences=["a", "b", "c", "d"]), "oai"),
    "thinking disabled": (body("oai-first", thinking={"type": "disabled"}), "oai"),
}


@pytest.mark.parametrize(("request_body", "provider"), CASES.values(), ids=CASES.keys())
async def test_a_route_the_request_exceeds_is_skipped_for_the_next(
    mixed: Gateway, request_body: dict[str, Any], provider: str
) -> None:
    url, anth, openai = mixed
    status, headers, raw = await post(url, "/v1/messages", request_body)
    assert status == 200, raw
    assert headers["x-messagegate-provider"] == provider
    served = anth if provider == "anth" else openai
    other = openai if provider == "anth" else anth
    assert (len(served.received), len(other.received)) == (1, 0)
    sent = served.received[0].json
    if "temperature" in request_body:
        assert sent["temperature"] == request_body["temperature"]  # never changed silently


async def test_no_route_left_is_a_400_naming_what_each_route_lacked(mixed: Gateway) -> None:
    url, anth, openai = mixed
    request_body = body("nowhere", temperature=1.5, messages=with_content(IMAGE))
    status, _, raw = await post(url, "/v1/messages", request_body)
    assert status == 400
    kind, message = envelope(raw)
    assert kind == "invalid_request_error"
    assert "anth/a-model: temperature 1.5 > 1.0" in message
    assert "oai/o-model: no vision" in message
    assert not anth.received
    assert not openai.received


class City(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid")
    city: str


@pytest.mark.parametrize("model", ["anth-first", "oai-first"])
async def test_structured_output_is_answered_as_json_on_both_route_kinds(
    mixed: Gateway, sdk: Callable[..., anthropic.AsyncAnthropic], model: str
) -> None:
    url, anth, openai = mixed
    anth.default = script.reply(script.message([{"type": "text", "text": '{"city": "Oslo"}'}]))
    openai.default = Reply(json=oai.completion("o-model", '{"city": "Oslo"}', []))
    parsed = await sdk(url).messages.parse(
        model=model, max_tokens=50, messages=HELLO, output_format=City
    )
    assert parsed.parsed_output == City(city="Oslo")
    if model == "anth-first":
        assert anth.received[0].json["output_config"]["format"]["type"] == "json_schema"
        return
    sent = openai.received[0].json
    assert sent["response_format"]["type"] == "json_schema"
    assert sent["response_format"]["json_schema"]["strict"] is True
    assert (
        sent["response_format"]["json_schema"]["schema"]["properties"]["city"]["type"] == "string"
    )
    assert "output_config" not in sent


async def test_the_older_output_format_field_reaches_an_openai_route_too(mixed: Gateway) -> None:
    url, _, openai = mixed
    openai.default = Reply(chunks=oai.chunks("o-model", '{"city": "Oslo"}', [], usage=True))
    fmt = {"type": "json_schema", "schema": CITY_SCHEMA}
    request_body = body("oai-first", stream=True, output_format=fmt)
    status, _, raw = await post(url, "/v1/messages", request_body)
    assert status == 200
    deltas = [data["delta"] for event, data in sse_events(raw) if event == "content_block_delta"]
    assert "".join(d["text"] for d in deltas) == '{"city": "Oslo"}'
    sent = openai.received[0].json
    assert sent["response_format"]["json_schema"] == {
        "name": "output",
        "schema": CITY_SCHEMA,
        "strict": True,
    }
    assert "output_format" not in orjson.dumps(sent).decode()


def test_capabilities_default_by_kind_and_preset_and_a_route_may_say_otherwise() -> None:
    upstreams = FakeUpstream(), FakeUpstream()
    raw = config(*upstreams)
    raw["models"]["ds-first"]["routes"][0]["capabilities"] = {"max_stop_sequences": 2}
    models = build_config(raw).models
    anth, openai = models["anth-first"].routes
    assert (anth.capabilities.temperature_max, anth.capabilities.max_stop_sequences) == (1.0, None)
    assert anth.capabilities.pdf
    assert (openai.capabilities.temperature_max, openai.capabilities.max_stop_sequences) == (2.0, 4)
    assert openai.capabilities.pdf  # as a placeholder text, which a conversation can live with
    assert not models["oai-first"].routes[0].capabilities.vision
    deepseek = models["ds-first"].routes[0].capabilities
    assert (deepseek.structured_output, deepseek.max_stop_sequences) == (False, 2)


@pytest.mark.parametrize(
    ("capabilities", "problem"),
    [
        ({"vision": "yes"}, "capabilities.vision: expected bool, got str"),
        ({"temperature_max": 0}, "capabilities.temperature_max: must be a positive number"),
        ({"max_stop_sequences": 0}, "capabilities.max_stop_sequences: must be a positive integer"),
        ({"audio": True}, "capabilities.audio: unknown key"),
    ],
)
def test_a_wrong_capability_names_its_key_path(capabilities: dict[str, Any], problem: str) -> None:
    raw = config(FakeUpstream(), FakeUpstream())
    raw["models"]["anth-first"]["routes"][0]["capabilities"] = capabilities
    with pytest.raises(ConfigError, match=re.escape(f"models.anth-first.routes.0.{problem}")):
        build_config(raw)


def test_the_floor_is_what_every_route_can_take_and_a_request_within_it_needs_no_look() -> None:
    least = floor(
        [
            Capabilities(),
            Capabilities(vision=False, max_stop_sequences=4, temperature_max=2.0),
            Capabilities(max_stop_sequences=16, temperature_max=1.5),
        ]
    )
    assert least == Capabilities(vision=False, max_stop_sequences=4, temperature_max=1.0)
    assert within(least, body("m", temperature=1.0, stop_sequences=["a"] * 4))
    assert not within(least, body("m", temperature=1.1))
    assert not within(least, body("m", stop_sequences=["a"] * 5))
    assert not within(least, body("m", messages=with_content(IMAGE)))
    assert within(least, body("m", messages=with_content(PDF)))
    assert not within(Capabilities(tools=False), body("m", tools=[TOOL]))
