"""Limits shared through the real Redis (`redis:`): two gateways on one key's rpm, tpm,
concurrency and budget; a dead replica's lease; the period boundary with an injected clock; each
`on_outage` mode of each kind of limit, through the official SDK."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from datetime import UTC, datetime
from typing import Any

import anthropic
import pytest
import redis.asyncio as aioredis
import yaml

import fakes.anthropic_script as script
from fakes.clock import FakeClock
from fakes.gateway import build_config, running_gateway
from fakes.redis_server import SHARED_URL, private_redis, shared_redis, unique_prefix
from fakes.served import free_port
from fakes.upstream import FakeUpstream
from helpers import readme_yaml
from messagegate.cli import describe
from messagegate.config import ConfigError
from messagegate.config.redis import OutagePolicy
from messagegate.limits.circuit import Circuit, Phase
from messagegate.limits.limiter import Limiter
from messagegate.limits.shared import SharedLimiter
from messagegate.server.app import GatewayApp
from test_limits import ANSWER, ANSWER_COST, HELLO, KEY, answering, ask, limited_config

NOON = datetime(2026, 12, 3, 12, tzinfo=UTC).timestamp()


@pytest.fixture
async def prefix() -> AsyncIterator[str]:
    name = unique_prefix()
    async with shared_redis(name):
        yield name


@pytest.fixture
async def store(prefix: str) -> AsyncIterator[aioredis.Redis]:
    async with shared_redis(prefix) as client:
        yield client


def shared_config(
    upstream: FakeUpstream, prefix: str, url: str = SHARED_URL, **limits: Any
) -> dict[str, Any]:
    raw = limited_config(upstream, **limits)
    # A generous timeout: the tests, two gateways and the upstream share one busy event loop.
    raw["redis"] = {"url": url, "prefix": prefix, "lease_ttl": 30, "timeout": 5}
    return raw


@asynccontextmanager
async def two_gateways(
    raw: dict[str, Any], clock: FakeClock
) -> AsyncIterator[tuple[tuple[str, GatewayApp], tuple[str, GatewayApp]]]:
    async with AsyncExitStack() as stack:
        first = await stack.enter_async_context(
            running_gateway(build_config(raw), wall_clock=clock)
        )
        second = await stack.enter_async_context(
            running_gateway(build_config(raw), wall_clock=clock)
        )
        yield first, second


async def settled(*apps: GatewayApp) -> None:
    """Waits (boundedly) until the gateways' settlements have reached Redis."""
    for app in apps:
        shared = app.shared_limiter
        assert shared is not None
        for _ in range(200):
            if not shared._settling:
                break
            await asyncio.wait(shared._settling, timeout=0.05)
        assert not shared._settling


async def budget_hash(store: aioredis.Redis, prefix: str, period: str) -> dict[str, int]:
    raw = await store.hgetall(f"{prefix}:{{alice}}:budget:{period}")
    return {k.decode() if isinstance(k, bytes) else k: int(v) for k, v in raw.items()}


async def test_rpm_holds_across_two_gateways(upstream: FakeUpstream, sdk: Any, prefix: str) -> None:
    answering(upstream)
    clock = FakeClock(NOON)
    raw = shared_config(upstream, prefix, rpm=2, tpm=10_000)
    async with two_gateways(raw, clock) as ((first, _), (second, _)):
        one = await ask(sdk, first, False)
        two = await ask(sdk, second, True)
        assert one.headers["anthropic-ratelimit-requests-remaining"] == "1"
        assert two.headers["anthropic-ratelimit-requests-remaining"] == "0"
        with pytest.raises(anthropic.RateLimitError) as caught:
            await ask(sdk, first, False)
        assert caught.value.status_code == 429
        assert "2 requests per minute" in caught.value.message
        assert caught.value.response.headers["retry-after"] == "30"
        assert caught.value.response.headers["anthropic-ratelimit-requests-remaining"] == "0"
        assert len(upstream.received) == 2
        clock.advance(30)
        await ask(sdk, second, False)
    assert len(upstream.received) == 3


async def test_tpm_is_corrected_at_the_end_for_every_gateway(
    upstream: FakeUpstream, sdk: Any, prefix: str
) -> None:
    answering(upstream)
    clock = FakeClock(NOON)
    async with two_gateways(shared_config(upstream, prefix, tpm=1000), clock) as (
        (first, first_app),
        (second, _),
    ):
        response = await ask(sdk, first, False, max_tokens=900)
        # 900 and the input's estimate reserved, 18 used: the correction shows at once.
        assert response.headers["anthropic-ratelimit-tokens-remaining"] == "982"
        await settled(first_app)
        # Only the correction leaves room for another 900 on the other gateway.
        response = await ask(sdk, second, False, max_tokens=900)
        assert response.headers["anthropic-ratelimit-tokens-remaining"] == "964"
        with pytest.raises(anthropic.RateLimitError, match="1000 tokens per minute"):
            await ask(sdk, first, True, max_tokens=990)
    assert len(upstream.received) == 2


async def test_concurrency_holds_across_gateways(
    upstream: FakeUpstream, sdk: Any, prefix: str
) -> None:
    hold = asyncio.Event()
    upstream.script(script.stream_reply(ANSWER, hold=hold, hold_after=2))
    upstream.default = script.reply(ANSWER)
    raw = shared_config(upstream, prefix, concurrency=1)
    async with two_gateways(raw, FakeClock(NOON)) as ((first, first_app), (second, _)):
        client = sdk(first, key=KEY)
        async with client.messages.stream(model="claude-test", max_tokens=5, messages=HELLO) as s:
            with pytest.raises(anthropic.RateLimitError, match="1 requests at once") as caught:
                await ask(sdk, second, False)
            assert caught.value.response.headers["retry-after"] == "1"
            hold.set()
            await s.get_final_message()
        await settled(first_app)
        await ask(sdk, second, False)
    assert len(upstream.received) == 2


async def test_the_lease_of_a_dead_replica_expires(
    upstream: FakeUpstream, sdk: Any, prefix: str
) -> None:
    answering(upstream)
    clock = FakeClock(NOON)
    config = build_config(shared_config(upstream, prefix, concurrency=1))
    assert config.redis is not None
    dead = SharedLimiter(config.redis, config.on_outage, Limiter(clock), server_time=False)
    await dead.start()
    await dead.admit(config.keys[0], 10, 0)  # never settled, never renewed again
    await dead.close()
    async with running_gateway(config, wall_clock=clock) as (url, _):
        with pytest.raises(anthropic.RateLimitError, match="1 requests at once"):
            await ask(sdk, url, False)
        clock.advance(30.001)
        await ask(sdk, url, False)
    assert len(upstream.received) == 1


async def test_a_running_request_s_lease_is_renewed(
    upstream: FakeUpstream, sdk: Any, prefix: str, store: aioredis.Redis
) -> None:
    hold = asyncio.Event()
    upstream.script(script.stream_reply(ANSWER, hold=hold, hold_after=2))
    clock = FakeClock(NOON)
    raw = shared_config(upstream, prefix, concurrency=1)
    raw["redis"]["lease_ttl"] = 3  # renewed every second
    async with running_gateway(build_config(raw), wall_clock=clock) as (url, app):
        client = sdk(url, key=KEY)
        async with client.messages.stream(model="claude-test", max_tokens=5, messages=HELLO) as s:
            clock.advance(100)
            leases = f"{prefix}:{{alice}}:leases"
            for _ in range(100):  # the next renewal moves the lease past the new time
                scores = await store.zrange(leases, 0, -1, withscores=True)
                if scores and float(scores[0][1]) > clock.now:
                    break
                await asyncio.sleep(0.05)
            assert scores[0][1] == pytest.approx(clock.now + 3)
            hold.set()
            await s.get_final_message()
        await settled(app)
        assert await store.zcard(leases) == 0


@pytest.mark.parametrize("mode", ["soft", "hard"])
async def test_budget_holds_under_64_clients_on_two_gateways(
    upstream: FakeUpstream, sdk: Any, prefix: str, store: aioredis.Redis, mode: str
) -> None:
    answering(upstream)
    budget_micro = 1000
    raw = shared_config(upstream, prefix, budget=budget_micro / 1e6, budget_mode=mode)
    async with two_gateways(raw, FakeClock(NOON)) as ((first, first_app), (second, second_app)):
        statuses: list[int] = []

        async def client(url: str) -> int:
            """Asks until refused (bounded): the budget is used up, not just reached."""
            for answered in range(100):
                try:
                    await ask(sdk, url, False)
                except anthropic.APIStatusError as exc:
                    statuses.append(exc.status_code)
                    return answered
            raise AssertionError("never refused")

        clients = (client(first if i % 2 else second) for i in range(64))
        answered = sum(await asyncio.gather(*clients))
        await settled(first_app, second_app)
    spent = await budget_hash(store, prefix, "all:-inf")
    assert statuses == [402] * 64
    assert answered == len(upstream.received)
    assert spent == {"spent": answered * ANSWER_COST, "reserved": 0}
    if mode == "hard":
        assert spent["spent"] <= budget_micro
    else:
        assert budget_micro <= spent["spent"] <= budget_micro + ANSWER_COST


async def test_budget_resets_at_the_period_boundary(
    upstream: FakeUpstream, sdk: Any, prefix: str, store: aioredis.Redis
) -> None:
    answering(upstream)
    clock = FakeClock(NOON)
    raw = shared_config(upstream, prefix, budget=0.00004, period="day")  # 40 micro-USD
    raw["budget_timezone"] = "Europe/Paris"
    async with two_gateways(raw, clock) as ((first, first_app), (second, second_app)):
        await ask(sdk, first, False)
        await settled(first_app)
        await ask(sdk, second, True)  # 25 spent < 40: admitted, overshoots by this one
        await settled(second_app)
        paris_day = datetime(2026, 12, 2, 23, tzinfo=UTC).timestamp()
        spent = await budget_hash(store, prefix, f"day:{paris_day:.0f}")
        assert spent == {"spent": 2 * ANSWER_COST, "reserved": 0}
        ttl = await store.pttl(f"{prefix}:{{alice}}:budget:day:{paris_day:.0f}")
        assert 0 < ttl <= (11 + 1) * 3600 * 1000  # until Paris's midnight, and an hour's grace
        clock.now = datetime(2026, 12, 3, 22, 59, 59, 999_000, tzinfo=UTC).timestamp()
        with pytest.raises(anthropic.APIStatusError) as caught:
            await ask(sdk, first, False)
        assert caught.value.status_code == 402
        assert caught.value.response.headers["x-should-retry"] == "false"
        assert "resets at 2026-12-03T23:00:00Z" in caught.value.message
        clock.now = datetime(2026, 12, 3, 23, tzinfo=UTC).timestamp()
        await ask(sdk, second, False)
    assert len(upstream.received) == 3


async def test_an_unpriced_route_reserves_and_settles_nothing(
    upstream: FakeUpstream, sdk: Any, prefix: str, store: aioredis.Redis
) -> None:
    answering(upstream)
    raw = shared_config(upstream, prefix, budget=0.00001)
    del raw["models"]["claude-test"]["routes"][0]["price"]
    async with running_gateway(build_config(raw), wall_clock=FakeClock(NOON)) as (url, app):
        for stream in (False, True, False):
            await ask(sdk, url, stream)
        await settled(app)
        assert app.shared_limiter is not None
        assert app.shared_limiter.circuit.phase is Phase.CLOSED
    assert await budget_hash(store, prefix, "all:-inf") == {"reserved": 0}
    assert len(upstream.received) == 3


async def test_the_first_replica_seeds_the_period_from_the_ledger(
    upstream: FakeUpstream, sdk: Any, prefix: str, store: aioredis.Redis, tmp_path: Any
) -> None:
    answering(upstream)
    clock = FakeClock(NOON)
    raw = shared_config(upstream, prefix, budget=0.00004, period="day")
    raw["database"] = str(tmp_path / "mg.db")
    async with running_gateway(build_config(raw), wall_clock=clock) as (url, app):
        await ask(sdk, url, False)
        await ask(sdk, url, False)
        await settled(app)
    day = f"{prefix}:{{alice}}:budget:day:{datetime(2026, 12, 3, tzinfo=UTC).timestamp():.0f}"
    await store.delete(day)  # a Redis that has never seen this period
    async with running_gateway(build_config(raw), wall_clock=clock) as (url, _):
        assert await budget_hash(store, prefix, day.rpartition("budget:")[2]) == {
            "spent": 2 * ANSWER_COST,
            "reserved": 0,
        }
        with pytest.raises(anthropic.APIStatusError) as caught:
            await ask(sdk, url, False)
        assert caught.value.status_code == 402
    assert len(upstream.received) == 2


OUTAGE_LIMITS: dict[str, dict[str, Any]] = {
    "rate_limits": {"rpm": 100, "tpm": 100_000},
    "concurrency": {"concurrency": 5},
    "budgets": {"budget": 1.0},
}


@pytest.mark.parametrize("mode", ["fail_open", "fail_closed"])
@pytest.mark.parametrize("setting", sorted(OUTAGE_LIMITS))
async def test_an_unreachable_redis_does_what_on_outage_says(
    upstream: FakeUpstream, sdk: Any, setting: str, mode: str
) -> None:
    answering(upstream)
    closed = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    raw = shared_config(upstream, unique_prefix(), closed, **OUTAGE_LIMITS[setting])
    others = dict.fromkeys(OUTAGE_LIMITS, "fail_open" if mode == "fail_closed" else "fail_closed")
    raw["on_outage"] = {**others, setting: mode}
    async with running_gateway(build_config(raw), wall_clock=FakeClock(NOON)) as (url, _):
        if mode == "fail_open":
            response = await ask(sdk, url, False)
            assert response.status_code == 200
            if setting == "rate_limits":  # the in-process limiter's own count
                assert response.headers["anthropic-ratelimit-requests-remaining"] == "99"
            assert len(upstream.received) == 1
            return
        for _ in range(2):  # the second does not ask Redis: the circuit is open
            with pytest.raises(anthropic.InternalServerError) as caught:
                await ask(sdk, url, False)
            assert caught.value.status_code == 503
            body: Any = caught.value.body
            assert body["type"] == "error"
            assert body["error"]["type"] == "api_error"
            assert "Redis) is unreachable" in body["error"]["message"]
            assert closed not in body["error"]["message"]
            headers = caught.value.response.headers
            assert 1 <= int(headers["retry-after"]) <= 5
            assert headers["x-should-retry"] == "true"
        assert upstream.received == []


async def test_redis_dying_and_coming_back(
    upstream: FakeUpstream, sdk: Any, caplog: pytest.LogCaptureFixture
) -> None:
    answering(upstream)
    clock = FakeClock(NOON)
    async with private_redis() as server:
        raw = shared_config(upstream, unique_prefix(), server.url, rpm=100)
        raw["redis"]["retry_interval"] = 0.01
        raw["on_outage"] = {"rate_limits": "fail_closed"}
        async with running_gateway(build_config(raw), wall_clock=clock) as (url, app):
            admin = aioredis.Redis.from_url(server.url)
            await admin.script_flush()  # a restarted Redis has no scripts: EVALSHA's NOSCRIPT
            await admin.aclose()
            response = await ask(sdk, url, False)
            assert response.headers["anthropic-ratelimit-requests-remaining"] == "99"
            await server.kill()
            with caplog.at_level(logging.WARNING, "messagegate.error"):
                for _ in range(3):
                    with pytest.raises(anthropic.InternalServerError, match="unreachable"):
                        await ask(sdk, url, False)
            outages = [r for r in caplog.records if "unreachable" in r.getMessage()]
            assert len(outages) == 1  # once per outage, not per request
            assert str(server.port) in outages[0].getMessage()
            await server.start()  # an empty Redis on the same port
            assert app.shared_limiter is not None
            for _ in range(100):
                await asyncio.sleep(0.02)  # past the retry interval: the next request probes
                try:
                    response = await ask(sdk, url, False)
                    break
                except anthropic.InternalServerError:
                    continue
            assert response.headers["anthropic-ratelimit-requests-remaining"] == "99"
            assert "reachable again" in caplog.text
    assert len(upstream.received) == 2


async def test_an_open_budget_falls_back_on_what_this_process_spent(
    upstream: FakeUpstream, sdk: Any
) -> None:
    answering(upstream)
    async with private_redis() as server:
        raw = shared_config(upstream, unique_prefix(), server.url, budget=0.00004)  # 40 micro-USD
        raw["on_outage"] = {"budgets": "fail_open"}
        async with running_gateway(build_config(raw), wall_clock=FakeClock(NOON)) as (url, app):
            await ask(sdk, url, False)
            await ask(sdk, url, True)
            await settled(app)
            await server.kill()
            # 50 spent through Redis: the in-process fallback knows it too.
            with pytest.raises(anthropic.APIStatusError) as caught:
                await ask(sdk, url, False)
            assert caught.value.status_code == 402
            assert app.limiter._states["alice"].spent == 2 * ANSWER_COST
    assert len(upstream.received) == 2


def test_config_reads_redis_as_a_url_or_a_mapping(upstream: FakeUpstream) -> None:
    plain = build_config({**limited_config(upstream), "redis": "redis://h:6379/1"})
    assert plain.redis is not None
    assert plain.redis.url == "redis://h:6379/1"
    assert plain.redis.prefix == "mg"
    assert "h:6379" not in repr(plain.redis)
    assert plain.on_outage == OutagePolicy("fail_open", "fail_open", "fail_closed")
    raw = {
        **limited_config(upstream),
        "redis": {"url": "rediss://h", "timeout": 0.5, "lease_ttl": 10},
        "on_outage": {"budgets": "fail_open"},
    }
    mapped = build_config(raw)
    assert mapped.redis is not None
    assert mapped.redis.timeout == 0.5
    assert mapped.on_outage.budgets == "fail_open"
    bad_configs: list[tuple[dict[str, Any], str]] = [
        ({"redis": "http://h"}, "redis.url: expected a redis://"),
        ({"redis": {"url": "redis://h", "lease_ttl": 1}}, "redis.lease_ttl: must be at least"),
        ({"redis": {"url": "redis://h", "prefix": "a{b"}}, "redis.prefix"),
        ({"on_outage": {"budgets": "maybe"}}, "on_outage.budgets: expected"),
    ]
    for bad, problem in bad_configs:
        with pytest.raises(ConfigError, match=problem):
            build_config({**limited_config(upstream), **bad})
    assert build_config(limited_config(upstream)).redis is None
    secret = build_config({**limited_config(upstream), "redis": "redis://:hunter2@h:6379/0"})
    assert "limits: shared through redis://***@h:6379/0" in describe(secret)
    assert "hunter2" not in describe(secret)


def test_the_readme_s_example_is_the_defaults(upstream: FakeUpstream) -> None:
    example = yaml.safe_load(readme_yaml("shared-limits-config"))
    config = build_config({**limited_config(upstream), **example})
    assert config.redis is not None
    assert config.redis.url == "redis://127.0.0.1:6379/0"
    assert config.on_outage == OutagePolicy()


def test_the_circuit_lets_one_probe_through_once_cooled() -> None:
    clock = FakeClock(0.0)
    circuit = Circuit(5.0, clock)
    assert circuit.allows()
    assert circuit.failed()  # the outage begins: logged
    assert not circuit.allows()
    assert circuit.retry_after() == 5
    clock.advance(5)
    assert circuit.allows()  # the probe
    assert circuit.phase is Phase.PROBING
    assert not circuit.allows()  # the others do not wait for it
    assert not circuit.failed()  # the same outage: not logged again
    clock.advance(4.5)
    assert not circuit.allows()
    assert circuit.retry_after() == 1
    clock.advance(0.5)
    assert circuit.allows()
    assert circuit.succeeded()  # the outage ends: logged
    assert circuit.allows()
    assert not circuit.succeeded()
