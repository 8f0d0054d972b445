"""Routing policy end to end: filters, preferences, failover, model fallback, circuit breaker."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import anthropic
import orjson
import pytest
from anthropic.types import MessageParam

import fakes.anthropic_script as script
from conftest import GATEWAY_KEY, PROVIDER_KEY
from fakes.clock import FakeClock
from fakes.gateway import build_config, running_gateway
from fakes.upstream import FakeUpstream, Reply
from helpers import envelope, first_text, get, post, sse_events
from messagegate.config import BreakerPolicy

HELLO: list[MessageParam] = [{"role": "user", "content": "Hello"}]
ROUTING_FIELDS = {
    "allowed_providers",
    "eu_native",
    "allow_zero_data_retention",
    "allow_quantization",
    "enable_model_fallback",
    "preference",
}


def answer(text: str = "ok", **kwargs: Any) -> Reply:
    return script.reply(script.message([{"type": "text", "text": text}]), **kwargs)


@pytest.fixture
async def fleet() -> AsyncIterator[dict[str, FakeUpstream]]:
    """Three fake Anthropic-native providers: us (plain), eu (EU, ZDR) and q (serves quantized)."""
    fakes = {name: FakeUpstream() for name in ("us", "eu", "q")}
    for fake in fakes.values():
        await fake.start()
        fake.default = answer()
    yield fakes
    for fake in fakes.values():
        await fake.stop()


def fleet_config(fleet: dict[str, FakeUpstream], **extra: Any) -> dict[str, Any]:
    providers: dict[str, dict[str, Any]] = {
        "us": {"region": "us"},
        "eu": {"region": "eu", "zero_data_retention": True},
        "q": {"region": "eu"},
    }
    config: dict[str, Any] = {
        "keys": [{"key": GATEWAY_KEY, "name": "alice"}],
        "providers": {
            name: {"kind": "anthropic", "base_url": fleet[name].url, "api_key": PROVIDER_KEY}
            | attrs
            for name, attrs in providers.items()
        },
        "models": {
            "m": {
                "routes": [
                    {"provider": "us", "model": "m-us"},
                    {"provider": "q", "model": "m-q", "quantized": True},
                    {"provider": "eu", "model": "m-eu"},
                ],
                "fallbacks": ["backup"],
            },
            "backup": {"routes": [{"provider": "eu", "model": "backup-eu"}]},
        },
    }
    config.update(extra)
    return config


@asynccontextmanager
async def gateway(
    config: dict[str, Any], **kwargs: Any
) -> AsyncIterator[tuple[str, anthropic.AsyncAnthropic]]:
    async with running_gateway(build_config(config), **kwargs) as (url, _):
        client = anthropic.AsyncAnthropic(base_url=url, api_key=GATEWAY_KEY, max_retries=0)
        try:
            yield url, client
        finally:
            await client.close()


async def create(client: anthropic.AsyncAnthropic, **fields: Any) -> Any:
    return await client.messages.with_raw_response.create(
        model=fields.pop("model", "m"), max_tokens=50, messages=HELLO, extra_body=fields
    )


def served(fleet: dict[str, FakeUpstream]) -> dict[str, int]:
    return {name: len(fake.received) for name, fake in fleet.items()}


@pytest.mark.parametrize(
    ("fields", "provider"),
    [
        ({}, "us"),
        ({"allowed_providers": ["eu"]}, "eu"),
        ({"eu_native": True}, "q"),
        ({"allow_zero_data_retention": True}, "eu"),
        ({"eu_native": True, "allow_quantization": False}, "eu"),
        ({"allowed_providers": ["us", "q"], "eu_native": True}, "q"),
    ],
)
async def test_filters_choose_the_provider(
    fleet: dict[str, FakeUpstream], fields: dict[str, Any], provider: str
) -> None:
    async with gateway(fleet_config(fleet)) as (_, client):
        response = await create(client, **fields)
    assert response.headers["x-messagegate-provider"] == provider
    assert served(fleet)[provider] == 1
    assert sum(served(fleet).values()) == 1
    sent = fleet[provider].received[0].json
    assert not ROUTING_FIELDS & set(sent)
    assert sent["model"] == f"m-{provider}"


async def test_routing_fields_never_reach_any_upstream_even_in_streams(
    fleet: dict[str, FakeUpstream],
) -> None:
    fleet["eu"].default = script.stream_reply(script.message([{"type": "text", "text": "hey"}]))
    fields = {
        "allowed_providers": ["eu"],
        "eu_native": True,
        "allow_zero_data_retention": True,
        "allow_quantization": False,
        "enable_model_fallback": False,
        "preference": "cost",
    }
    async with gateway(fleet_config(fleet)) as (url, _):
        body = {"model": "m", "max_tokens": 5, "messages": HELLO, "stream": True, **fields}
        status, _, raw = await post(url, "/v1/messages", body)
    assert status == 200
    assert sse_events(raw)[-1][0] == "message_stop"
    assert not ROUTING_FIELDS & set(fleet["eu"].received[0].json)


async def test_no_eligible_route_says_which_filter_excluded_which_route(
    fleet: dict[str, FakeUpstream],
) -> None:
    async with gateway(fleet_config(fleet)) as (url, _):
        body = {"model": "m", "max_tokens": 5, "messages": HELLO, "allowed_providers": ["us"]}
        body["eu_native"] = True
        status, _, raw = await post(url, "/v1/messages", body)
    assert status == 400
    kind, message = envelope(raw)
    assert kind == "invalid_request_error"
    assert "us/m-us (m) excluded by eu_native" in message
    assert "eu/m-eu (m) excluded by allowed_providers" in message
    assert "eu/backup-eu (backup) excluded by allowed_providers" in message
    assert sum(served(fleet).values()) == 0


@pytest.mark.parametrize(
    ("field", "value"),
    [("eu_native", "yes"), ("preference", "fastest"), ("allowed_providers", "eu")],
)
async def test_wrong_routing_field_is_a_400_naming_it(
    fleet: dict[str, FakeUpstream], field: str, value: Any
) -> None:
    async with gateway(fleet_config(fleet)) as (url, _):
        body = {"model": "m", "max_tokens": 5, "messages": HELLO, field: value}
        status, _, raw = await post(url, "/v1/messages", body)
    assert status == 400
    assert envelope(raw)[1].startswith(f"{field}:")


async def test_request_fields_override_key_defaults_which_override_gateway_defaults(
    fleet: dict[str, FakeUpstream],
) -> None:
    config = fleet_config(fleet, routing_defaults={"allowed_providers": ["q", "eu"]})
    config["keys"] = [
        {"key": GATEWAY_KEY, "name": "alice", "routing": {"allow_quantization": False}},
        {"key": "other-key-1234567", "name": "bob"},
    ]
    async with gateway(config) as (url, client):
        by_alice = await create(client)
        by_alice_override = await create(client, allow_quantization=True)
        status, headers, _ = await post(
            url,
            "/v1/messages",
            {"model": "m", "max_tokens": 5, "messages": HELLO},
            key="other-key-1234567",
        )
    assert by_alice.headers["x-messagegate-provider"] == "eu"
    assert by_alice_override.headers["x-messagegate-provider"] == "q"
    assert status == 200
    assert headers["x-messagegate-provider"] == "q"


async def test_failover_retries_then_moves_to_the_next_route(
    fleet: dict[str, FakeUpstream],
) -> None:
    fleet["us"].default = script.error_reply(500, "api_error", "boom")
    async with gateway(fleet_config(fleet)) as (_, client):
        response = await create(client)
    assert response.headers["x-messagegate-provider"] == "q"
    assert response.headers["x-messagegate-attempts"] == "3"
    assert served(fleet) == {"us": 2, "eu": 0, "q": 1}


@pytest.mark.parametrize("status", [502, 503, 504, 529])
async def test_every_retryable_status_fails_over(
    fleet: dict[str, FakeUpstream], status: int
) -> None:
    fleet["us"].default = script.error_reply(status, "api_error", "down")
    async with gateway(fleet_config(fleet)) as (_, client):
        response = await create(client)
    assert response.headers["x-messagegate-provider"] == "q"


async def test_connect_error_and_timeout_fail_over(fleet: dict[str, FakeUpstream]) -> None:
    config = fleet_config(fleet)
    config["providers"]["us"]["base_url"] = "http://127.0.0.1:9"  # nothing listens there
    config["providers"]["q"]["timeouts"] = {"first_byte": 0.2}
    fleet["q"].default = answer(delay=2.0)
    async with gateway(config) as (_, client):
        response = await create(client)
    assert response.headers["x-messagegate-provider"] == "eu"
    assert served(fleet)["eu"] == 1


async def test_rate_limit_moves_on_at_once_and_the_last_429_carries_retry_after(
    fleet: dict[str, FakeUpstream],
) -> None:
    limited = script.error_reply(429, "rate_limit_error", "slow down", headers={"retry-after": "7"})
    for fake in fleet.values():
        fake.default = limited
    async with gateway(fleet_config(fleet)) as (url, _):
        body = {"model": "m", "max_tokens": 5, "messages": HELLO}
        status, headers, raw = await post(url, "/v1/messages", body)
    assert status == 429
    assert headers["retry-after"] == "7"
    assert envelope(raw)[0] == "rate_limit_error"
    # No retry on a rate-limited route: one request each (us, q, eu, then backup on eu).
    assert served(fleet) == {"us": 1, "q": 1, "eu": 2}


async def test_client_errors_are_not_retried_elsewhere(fleet: dict[str, FakeUpstream]) -> None:
    fleet["us"].default = script.error_reply(400, "invalid_request_error", "bad tool schema")
    async with gateway(fleet_config(fleet)) as (url, _):
        body = {"model": "m", "max_tokens": 5, "messages": HELLO}
        status, _, raw = await post(url, "/v1/messages", body)
    assert status == 400
    assert envelope(raw) == ("invalid_request_error", "bad tool schema")
    assert served(fleet) == {"us": 1, "eu": 0, "q": 0}


async def test_retry_after_is_honoured_on_the_same_route(fleet: dict[str, FakeUpstream]) -> None:
    fleet["us"].script(
        script.error_reply(503, "overloaded_error", "busy", headers={"retry-after": "0"})
    )
    async with gateway(fleet_config(fleet)) as (_, client):
        response = await create(client)
    assert response.headers["x-messagegate-provider"] == "us"
    assert response.headers["x-messagegate-attempts"] == "2"


async def test_a_long_retry_after_skips_to_the_next_route(fleet: dict[str, FakeUpstream]) -> None:
    fleet["us"].script(
        script.error_reply(503, "overloaded_error", "busy", headers={"retry-after": "60"})
    )
    async with gateway(fleet_config(fleet)) as (_, client):
        response = await create(client)
    assert response.headers["x-messagegate-provider"] == "q"
    assert served(fleet)["us"] == 1


async def test_stream_failing_before_its_first_event_fails_over(
    fleet: dict[str, FakeUpstream],
) -> None:
    msg = script.message([{"type": "text", "text": "from q"}])
    fleet["us"].default = Reply(chunks=script.events(msg), drop_after=0)
    fleet["q"].default = script.stream_reply(msg)
    async with (
        gateway(fleet_config(fleet)) as (_, client),
        client.messages.stream(model="m", max_tokens=5, messages=HELLO) as stream,
    ):
        final = await stream.get_final_message()
    assert first_text(final) == "from q"
    assert served(fleet) == {"us": 2, "q": 1, "eu": 0}


async def test_stream_failing_after_bytes_reached_the_client_is_not_rerun(
    fleet: dict[str, FakeUpstream],
) -> None:
    msg = script.message([{"type": "text", "text": "partial answer"}])
    fleet["us"].default = Reply(chunks=script.events(msg), drop_after=3)
    async with gateway(fleet_config(fleet)) as (url, _):
        body = {"model": "m", "max_tokens": 5, "messages": HELLO, "stream": True}
        status, _, raw = await post(url, "/v1/messages", body)
    assert status == 200
    events = sse_events(raw)
    assert [name for name, _ in events[:3]] == ["message_start", "ping", "content_block_start"]
    assert events[-1][0] == "error"
    assert events[-1][1]["error"]["type"] == "api_error"
    assert served(fleet) == {"us": 1, "q": 0, "eu": 0}


async def test_model_fallback_answers_with_the_fallback_models_name(
    fleet: dict[str, FakeUpstream],
) -> None:
    config = fleet_config(fleet)
    config["models"]["m"]["routes"] = [{"provider": "us", "model": "m-us"}]
    fleet["us"].default = script.error_reply(529, "overloaded_error", "overloaded")
    async with gateway(config) as (url, client):
        response = await create(client)
        body = {"model": "m", "max_tokens": 5, "messages": HELLO, "enable_model_fallback": False}
        status, _, raw = await post(url, "/v1/messages", body)
    message = await response.parse()
    assert message.model == "backup"
    assert response.headers["x-messagegate-upstream-model"] == "backup-eu"
    assert status == 529
    assert envelope(raw)[0] == "overloaded_error"


async def test_filters_bind_fallbacks_too(fleet: dict[str, FakeUpstream]) -> None:
    config = fleet_config(fleet)
    config["models"]["m"]["routes"] = [{"provider": "us", "model": "m-us"}]
    fleet["us"].default = script.error_reply(500, "api_error", "down")
    async with gateway(config) as (url, _):
        body = {"model": "m", "max_tokens": 5, "messages": HELLO, "allowed_providers": ["us"]}
        status, _, _ = await post(url, "/v1/messages", body)
    assert status == 500
    assert served(fleet)["eu"] == 0


async def test_circuit_breaker_opens_skips_then_probes_and_recovers(
    fleet: dict[str, FakeUpstream],
) -> None:
    clock = FakeClock()
    fleet["us"].default = script.error_reply(500, "api_error", "down")
    breaker = BreakerPolicy(failures_to_open=2, cooldown=30.0)
    async with gateway(fleet_config(fleet), breaker=breaker, clock=clock) as (url, client):
        for _ in range(2):
            await create(client)
        assert served(fleet)["us"] == 4
        routes = await route_states(url)
        assert routes[("m", "us")]["state"] == "open"
        assert routes[("m", "us")]["cooldown_remaining_seconds"] == 30.0
        skipped = await create(client)
        assert served(fleet)["us"] == 4
        assert skipped.headers["x-messagegate-provider"] == "q"
        clock.advance(31)
        fleet["us"].default = answer()
        probe = await create(client)
        assert probe.headers["x-messagegate-provider"] == "us"
        routes = await route_states(url)
    assert routes[("m", "us")]["state"] == "closed"
    assert routes[("m", "us")]["failures"] == 2


async def test_every_route_open_is_tried_in_panic_and_answers_the_upstreams_error(
    fleet: dict[str, FakeUpstream],
) -> None:
    for fake in fleet.values():
        fake.default = script.error_reply(500, "api_error", "down")
    breaker = BreakerPolicy(failures_to_open=1, cooldown=30.0)
    async with gateway(fleet_config(fleet), breaker=breaker, clock=FakeClock()) as (url, _):
        body = {"model": "m", "max_tokens": 5, "messages": HELLO}
        first, _, _ = await post(url, "/v1/messages", body)
        tried = sum(served(fleet).values())
        status, _, raw = await post(url, "/v1/messages", body)
    assert first == 500
    assert status == 500
    assert envelope(raw)[0] == "api_error"
    assert sum(served(fleet).values()) == 2 * tried


async def route_states(url: str) -> dict[tuple[str, str], dict[str, Any]]:
    status, _, raw = await get(url, "/v1/gateway/routes")
    assert status == 200
    return {(r["model"], r["provider"]): r for r in orjson.loads(raw)["data"]}


async def test_routes_endpoint_requires_a_key(fleet: dict[str, FakeUpstream]) -> None:
    async with gateway(fleet_config(fleet)) as (url, _):
        status, _, raw = await get(url, "/v1/gateway/routes", key=None)
    assert status == 401
    assert envelope(raw)[0] == "authentication_error"


def latency(clock: FakeClock, seconds: float) -> Callable[[], None]:
    return lambda: clock.advance(seconds)


async def test_speed_prefers_the_measurably_faster_route_after_warm_up(
    fleet: dict[str, FakeUpstream],
) -> None:
    clock = FakeClock()
    fleet["us"].default = answer(on_request=latency(clock, 2.0))
    fleet["q"].default = answer(on_request=latency(clock, 0.3))
    fleet["eu"].default = answer(on_request=latency(clock, 1.0))
    async with gateway(fleet_config(fleet), clock=clock) as (url, client):
        warm_up = [await create(client, preference="speed") for _ in range(3)]
        after = [await create(client, preference="speed") for _ in range(4)]
        routes = await route_states(url)
    assert {r.headers["x-messagegate-provider"] for r in warm_up} == {"us", "q", "eu"}
    assert {r.headers["x-messagegate-provider"] for r in after} == {"q"}
    assert routes[("m", "q")]["ttft_ms"] == 300.0


async def test_cost_chooses_the_cheaper_route(fleet: dict[str, FakeUpstream]) -> None:
    config = fleet_config(fleet)
    prices = {"us": (3.0, 15.0), "q": (1.0, 2.0), "eu": (0.5, 1.5)}
    for route in config["models"]["m"]["routes"]:
        price_in, price_out = prices[route["provider"]]
        route["price"] = {"input": price_in, "output": price_out}
    async with gateway(config) as (_, client):
        cheapest = await create(client, preference="cost")
        in_config_order = await create(client)
    assert cheapest.headers["x-messagegate-provider"] == "eu"
    assert in_config_order.headers["x-messagegate-provider"] == "us"


async def test_cost_prices_a_cached_prefix_at_the_cache_read_price(
    fleet: dict[str, FakeUpstream],
) -> None:
    config = fleet_config(fleet)
    # us: dear input, cheap cache reads; eu: cheaper input, dear cache reads; q: unpriced.
    prices = {"us": {"cache_read": 0.3}, "eu": {"input": 2.0, "cache_read": 1.5}, "q": None}
    for route in config["models"]["m"]["routes"]:
        price = prices[route["provider"]]
        if price is not None:
            route["price"] = {"input": 3.0, "output": 15.0} | price
    long_system = "Our house style, in many words. " * 400
    cached = [{"type": "text", "text": long_system, "cache_control": {"type": "ephemeral"}}]
    async with gateway(config) as (_, client):
        warm = await create(client, preference="cost", system=cached)
        cold = await create(client, preference="cost", system=long_system)
    assert warm.headers["x-messagegate-provider"] == "us"
    assert cold.headers["x-messagegate-provider"] == "eu"
    assert fleet["us"].received[0].json["system"] == cached
    assert fleet["eu"].received[0].json["system"] == long_system


async def test_equal_priority_routes_share_load_by_weight(fleet: dict[str, FakeUpstream]) -> None:
    config = fleet_config(fleet)
    config["providers"]["eu"]["weight"] = 50
    for route in config["models"]["m"]["routes"]:
        route["priority"] = 1 if route["provider"] in ("us", "eu") else 2
    async with gateway(config) as (_, client):
        for _ in range(20):
            await create(client)
    counts = served(fleet)
    assert counts["q"] == 0
    assert counts["eu"] > counts["us"] > 0 or counts["eu"] >= 18


async def test_routes_that_cannot_hold_the_request_are_skipped(
    fleet: dict[str, FakeUpstream],
) -> None:
    config = fleet_config(fleet)
    config["models"]["m"]["routes"][0]["max_context"] = 50
    long_prompt: list[MessageParam] = [{"role": "user", "content": "word " * 500}]
    async with gateway(config) as (_, client):
        response = await client.messages.with_raw_response.create(
            model="m", max_tokens=5, messages=long_prompt
        )
        short = await create(client)
    assert response.headers["x-messagegate-provider"] == "q"
    assert short.headers["x-messagegate-provider"] == "us"


async def test_access_log_names_the_route_and_why_others_were_skipped(
    fleet: dict[str, FakeUpstream], caplog: pytest.LogCaptureFixture
) -> None:
    fleet["us"].default = script.error_reply(500, "api_error", "down")
    caplog.set_level("INFO", logger="messagegate.access")
    async with gateway(fleet_config(fleet)) as (_, client):
        await create(client, allow_quantization=False)
    line = next(r.getMessage() for r in caplog.records if r.name == "messagegate.access")
    assert "route=eu/m-eu" in line
    assert "q/m-q (m) excluded by allow_quantization" in line
    assert "us/m-us failed" in line


async def test_a_prompt_no_route_can_hold_is_worded_like_anthropics_overflow(
    fleet: dict[str, FakeUpstream],
) -> None:
    config = fleet_config(fleet)
    config["models"]["backup"]["routes"][0]["max_context"] = 50
    for route in config["models"]["m"]["routes"]:
        route["max_context"] = 40
    long_prompt = [{"role": "user", "content": "word " * 500}]
    async with gateway(config) as (url, _):
        body = {"model": "m", "max_tokens": 5, "messages": long_prompt}
        status, _, raw = await post(url, "/v1/messages", body)
    assert status == 400
    kind, message = envelope(raw)
    assert kind == "invalid_request_error"
    assert message.startswith("prompt is too long: ")
    assert "tokens > 40 maximum" in message
    assert sum(served(fleet).values()) == 0
