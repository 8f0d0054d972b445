"""The circuit breaker end to end: panic when every eligible route is open, probes that end."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from anthropic.types import MessageParam

import fakes.anthropic_script as script
from fakes.clock import FakeClock
from fakes.gateway import FAST_FAILOVER
from fakes.upstream import FakeUpstream
from helpers import envelope, post
from messagegate.config import BreakerPolicy, FailoverPolicy
from test_routing import answer, fleet, fleet_config, gateway, route_states, served

__all__ = ["fleet"]  # the fixture, imported for pytest

HELLO: list[MessageParam] = [{"role": "user", "content": "Hello"}]
ONE_ATTEMPT = FailoverPolicy(attempts_per_route=1, backoff_initial=0.0, backoff_max=0.0)
DOWN = script.error_reply(500, "api_error", "down")


def two_routes(fleet: dict[str, FakeUpstream]) -> dict[str, Any]:
    config = fleet_config(fleet)
    config["models"] = {
        "one": {"routes": [{"provider": "us", "model": "one-us"}]},
        "two": {
            "routes": [{"provider": "us", "model": "two-us"}, {"provider": "q", "model": "two-q"}]
        },
    }
    return config


def body(model: str, **fields: Any) -> dict[str, Any]:
    return {"model": model, "max_tokens": 5, "messages": HELLO, **fields}


async def test_a_single_route_is_tried_in_panic_and_recovers_at_once(
    fleet: dict[str, FakeUpstream],
) -> None:
    fleet["us"].default = DOWN
    clock = FakeClock()  # never moves: the 30 s cooldown never ends
    async with gateway(two_routes(fleet), clock=clock, failover=ONE_ATTEMPT) as (url, _):
        failures = [await post(url, "/v1/messages", body("one")) for _ in range(8)]
        fleet["us"].default = answer("back")
        status, headers, _ = await post(url, "/v1/messages", body("one"))
        routes = await route_states(url)
    assert [(s, envelope(raw)[0]) for s, _, raw in failures] == [(500, "api_error")] * 8
    assert status == 200
    assert headers["x-messagegate-provider"] == "us"
    assert served(fleet)["us"] == 9
    health = routes[("one", "us")]
    assert health["state"] == "closed"
    # Five failures opened it; the next three requests and the recovered one came in panic.
    assert health["panic_attempts"] == 4
    assert health["last_panic_seconds_ago"] == 0.0


async def test_an_open_route_is_skipped_while_another_is_closed(
    fleet: dict[str, FakeUpstream],
) -> None:
    fleet["us"].default = DOWN
    breaker = BreakerPolicy(failures_to_open=1, cooldown=30.0)
    config = two_routes(fleet)
    async with gateway(config, breaker=breaker, clock=FakeClock()) as (url, _):
        first = await post(url, "/v1/messages", body("two"))
        fleet["us"].default = answer("back")
        later = [await post(url, "/v1/messages", body("two")) for _ in range(3)]
        routes = await route_states(url)
    assert first[1]["x-messagegate-provider"] == "q"
    assert [r[1]["x-messagegate-provider"] for r in later] == ["q"] * 3
    assert served(fleet)["us"] == 2  # the first request's two attempts, nothing after
    assert routes[("two", "us")]["state"] == "open"
    assert routes[("two", "us")]["panic_attempts"] == 0


async def test_when_every_route_is_open_the_one_open_longest_is_tried_first(
    fleet: dict[str, FakeUpstream], caplog: pytest.LogCaptureFixture
) -> None:
    fleet["us"].default = fleet["q"].default = DOWN
    breaker = BreakerPolicy(failures_to_open=1, cooldown=30.0)
    clock = FakeClock()
    caplog.set_level("INFO", logger="messagegate.access")
    async with gateway(two_routes(fleet), breaker=breaker, clock=clock) as (url, _):
        await post(url, "/v1/messages", body("two", allowed_providers=["q"]))
        clock.advance(1)
        await post(url, "/v1/messages", body("two", allowed_providers=["us"]))
        fleet["q"].default = answer("back")
        before = served(fleet)
        status, headers, _ = await post(url, "/v1/messages", body("two"))
        routes = await route_states(url)
    assert status == 200
    assert headers["x-messagegate-provider"] == "q"
    assert served(fleet)["q"] - before["q"] == 1
    assert served(fleet)["us"] == before["us"]  # q opened first, so it went first
    assert routes[("two", "q")]["state"] == "closed"
    assert routes[("two", "q")]["panic_attempts"] == 1
    assert routes[("two", "us")]["panic_attempts"] == 0
    line = [r.getMessage() for r in caplog.records if r.name == "messagegate.access"][-2]
    assert "tried in panic" in line


Probing = tuple[str, dict[str, FakeUpstream], FakeClock]


@pytest.fixture
async def half_open(fleet: dict[str, FakeUpstream]) -> AsyncIterator[Probing]:
    """Model `two` with its first route `us` open and cooled down: the next request probes it."""
    fleet["us"].default = DOWN
    clock = FakeClock()
    config = two_routes(fleet)
    config["providers"]["us"]["timeouts"] = {"first_byte": 0.2}
    breaker = BreakerPolicy(failures_to_open=1, cooldown=30.0)
    async with gateway(config, breaker=breaker, clock=clock, failover=FAST_FAILOVER) as (url, _):
        status, headers, _ = await post(url, "/v1/messages", body("two"))
        assert (status, headers["x-messagegate-provider"]) == (200, "q")
        clock.advance(31)
        assert (await route_states(url))[("two", "us")]["state"] == "half_open"
        yield url, fleet, clock


async def recovers(url: str, fleet: dict[str, FakeUpstream]) -> None:
    """The route probes again, and its success closes it."""
    fleet["us"].default = answer("back")
    status, headers, _ = await post(url, "/v1/messages", body("two"))
    assert (status, headers["x-messagegate-provider"]) == (200, "us")
    assert (await route_states(url))[("two", "us")]["state"] == "closed"


async def test_a_probe_answered_with_a_400_leaves_the_route_probing_again(
    half_open: Probing,
) -> None:
    url, fleet, _ = half_open
    fleet["us"].script(script.error_reply(400, "invalid_request_error", "bad"))
    status, _, raw = await post(url, "/v1/messages", body("two"))
    assert (status, envelope(raw)) == (400, ("invalid_request_error", "bad"))
    assert (await route_states(url))[("two", "us")]["state"] == "half_open"
    await recovers(url, fleet)


async def test_a_probe_that_timed_out_leaves_the_route_able_to_recover(
    half_open: Probing,
) -> None:
    url, fleet, clock = half_open
    fleet["us"].default = answer("slow", delay=5.0)
    status, headers, _ = await post(url, "/v1/messages", body("two"))
    assert (status, headers["x-messagegate-provider"]) == (200, "q")
    routes = await route_states(url)
    assert (routes[("two", "us")]["state"], routes[("two", "us")]["probes"]) == ("open", 1)
    clock.advance(31)  # the failed probe started a new cooldown
    await recovers(url, fleet)


async def test_a_probe_whose_client_left_leaves_the_route_probing_again(
    half_open: Probing,
) -> None:
    url, fleet, _ = half_open
    arrived = asyncio.Event()
    fleet["us"].default = answer("slow", delay=30.0, on_request=arrived.set)
    client = asyncio.create_task(post(url, "/v1/messages", body("two")))
    await asyncio.wait_for(arrived.wait(), 10)
    assert (await route_states(url))[("two", "us")]["state"] == "probing"
    client.cancel()
    await asyncio.wait_for(fleet["us"].disconnected.wait(), 10)
    for _ in range(200):  # the gateway's task unwinds after the upstream saw it leave
        state = (await route_states(url))[("two", "us")]["state"]
        if state != "probing":
            break
    assert state == "half_open"
    await recovers(url, fleet)


async def test_the_access_log_says_an_open_route_was_skipped(
    fleet: dict[str, FakeUpstream], caplog: pytest.LogCaptureFixture
) -> None:
    fleet["us"].default = DOWN
    breaker = BreakerPolicy(failures_to_open=1, cooldown=30.0)
    caplog.set_level("INFO", logger="messagegate.access")
    async with gateway(two_routes(fleet), breaker=breaker, clock=FakeClock()) as (url, _):
        await post(url, "/v1/messages", body("two"))
        status, headers, _ = await post(url, "/v1/messages", body("two"))
    assert (status, headers["x-messagegate-provider"]) == (200, "q")
    line = [r.getMessage() for r in caplog.records if r.name == "messagegate.access"][-1]
    assert "us/two-us skipped: cooling down after failures" in line
