"""GET /metrics: the GenAI convention's histograms and messagegate's series, bounded and exact."""

from __future__ import annotations

import asyncio
import random
import string
import tracemalloc
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import yaml
from anthropic.types import MessageParam
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

import fakes.anthropic_script as script
from conftest import GATEWAY_KEY, PROVIDER_KEY, SDK
from fakes.clock import FakeClock
from fakes.gateway import build_config, running_gateway
from fakes.served import free_port
from fakes.upstream import FakeUpstream, Reply
from helpers import anthropic_config, envelope, get, post, readme_yaml
from messagegate.config import BreakerPolicy, ConfigError
from messagegate.errors import UpstreamTimeout
from messagegate.telemetry.metrics import GatewayMetrics

HELLO: list[MessageParam] = [{"role": "user", "content": "Hello"}]

# The semantic conventions' instruments (gen-ai-metrics.md): type, unit, attributes, buckets.
CONVENTION: dict[str, list[float]] = {
    "gen_ai_server_request_duration_seconds": (
        [0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92]
    ),
    "gen_ai_server_time_to_first_token_seconds": (
        [0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0]
    ),
    "gen_ai_server_time_per_output_token_seconds": (
        [0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5]
    ),
    "gen_ai_client_operation_duration_seconds": (
        [0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92]
    ),
    "gen_ai_client_token_usage": (
        [1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304, 16777216, 67108864]
    ),
}
REQUIRED_ATTRIBUTES = {"gen_ai_operation_name", "gen_ai_provider_name", "gen_ai_request_model"}


def samples(text: str) -> list[Sample]:
    return [s for family in text_string_to_metric_families(text) for s in family.samples]


def total(text: str, name: str, **labels: str) -> float:
    return sum(
        s.value
        for s in samples(text)
        if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())
    )


async def scrape(url: str, key: str | None = None) -> str:
    status, headers, body = await get(url, "/metrics", key=key)
    assert status == 200, body
    assert headers["content-type"].startswith("text/plain; version=0.0.4")
    return body.decode()


def two_routes(upstream: FakeUpstream, backup: FakeUpstream, **extra: Any) -> dict[str, Any]:
    """`claude-test` served by `upstream`, then by `backup` (provider `spare`, model `spare-1`)."""
    config = anthropic_config(upstream, **extra)
    config["providers"]["spare"] = {
        "kind": "anthropic",
        "base_url": backup.url,
        "api_key": PROVIDER_KEY,
    }
    config["models"]["claude-test"]["routes"].append({"provider": "spare", "model": "spare-1"})
    return config


def billed(input_tokens: int, output_tokens: int, cache_read: int = 0) -> dict[str, Any]:
    msg = script.message(
        [{"type": "text", "text": "hello there"}],
        input_tokens=input_tokens,
        output_tokens=output_tokens,
    )
    msg["usage"]["cache_read_input_tokens"] = cache_read
    return msg


async def test_a_failover_is_counted_per_attempt_and_tokens_equal_what_was_billed(
    upstream: FakeUpstream, second_upstream: FakeUpstream
) -> None:
    backup = second_upstream
    upstream.default = script.error_reply(500, "api_error", "boom")
    backup.script(script.reply(billed(100, 20, cache_read=30)), script.stream_reply(billed(7, 5)))
    async with running_gateway(build_config(two_routes(upstream, backup))) as (url, _):
        body = {"model": "claude-test", "max_tokens": 50, "messages": HELLO}
        status, _, _ = await post(url, "/v1/messages", body)
        assert status == 200
        status, _, raw = await post(url, "/v1/messages", body | {"stream": True})
        assert status == 200
        assert b"message_stop" in raw
        text = await scrape(url)
    assert len(upstream.received) == 4  # two tries per request
    assert len(backup.received) == 2
    chat = {"gen_ai_operation_name": "chat", "gen_ai_provider_name": "anthropic"}
    usage = "gen_ai_client_token_usage_sum"
    # Anthropic input includes cache reads and writes (the convention's Anthropic page).
    assert total(text, usage, gen_ai_token_type="input", **chat) == 100 + 30 + 7
    assert total(text, usage, gen_ai_token_type="output", **chat) == 25
    assert total(text, usage, gen_ai_response_model="spare-1") == 137 + 25
    duration = "gen_ai_client_operation_duration_seconds_count"
    assert total(text, duration, gen_ai_request_model="claude-upstream-1", error_type="500") == 4
    assert total(text, duration, gen_ai_request_model="spare-1") == 2
    assert total(text, "messagegate_upstream_attempts_total", error_type="500") == 4
    assert total(text, "messagegate_failovers_total", route="anth/claude-upstream-1") == 2
    server = "gen_ai_server_request_duration_seconds_count"
    assert total(text, server, gen_ai_request_model="claude-test") == 2
    assert total(text, server, gen_ai_response_model="spare-1") == 2
    assert total(text, "gen_ai_server_time_to_first_token_seconds_count") == 1
    assert total(text, "gen_ai_server_time_per_output_token_seconds_count") == 1
    assert total(text, "messagegate_requests_total", endpoint="/v1/messages", status="200") == 2
    assert total(text, "messagegate_open_streams") == 0
    assert total(text, "messagegate_gateway_overhead_seconds_count") == 0  # both failed over


async def test_names_types_units_and_buckets_follow_the_convention(upstream: FakeUpstream) -> None:
    upstream.default = script.stream_reply(billed(3, 4))
    async with running_gateway(build_config(anthropic_config(upstream))) as (url, _):
        body = {"model": "claude-test", "max_tokens": 50, "messages": HELLO, "stream": True}
        assert (await post(url, "/v1/messages", body))[0] == 200
        text = await scrape(url)
    families = {f.name: f for f in text_string_to_metric_families(text)}
    for name, buckets in CONVENTION.items():
        family = families[name.removesuffix("_seconds")] if name not in families else families[name]
        assert family.type == "histogram", name
        bounds = sorted(
            {float(s.labels["le"]) for s in family.samples if s.name.endswith("_bucket")}
        )
        assert bounds == [*map(float, buckets), float("inf")], name
        for sample in family.samples:
            assert set(sample.labels) >= REQUIRED_ATTRIBUTES, (name, sample.labels)
            assert sample.labels["gen_ai_operation_name"] == "chat"
    assert "# TYPE gen_ai_server_request_duration_seconds histogram" in text
    assert "# TYPE gen_ai_client_token_usage histogram" in text


async def test_unknown_models_and_errors_are_bounded(upstream: FakeUpstream) -> None:
    upstream.default = script.error_reply(400, "invalid_request_error", "bad")
    async with running_gateway(build_config(anthropic_config(upstream))) as (url, _):
        for name in ("nope-1", "nope-2", "nope-3"):
            body = {"model": name, "max_tokens": 5, "messages": HELLO}
            status, _, raw = await post(url, "/v1/messages", body)
            assert status == 404
            assert envelope(raw)[0] == "not_found_error"
        body = {"model": "claude-test", "max_tokens": 5, "messages": HELLO}
        assert (await post(url, "/v1/messages", body))[0] == 400
        text = await scrape(url)
    assert "nope" not in text
    server = "gen_ai_server_request_duration_seconds_count"
    assert total(text, server, gen_ai_request_model="other", error_type="not_found_error") == 3
    assert total(text, server, error_type="invalid_request_error") == 1
    assert total(text, "gen_ai_client_operation_duration_seconds_count", error_type="400") == 1
    assert total(text, "messagegate_requests_total", status="404") == 3


async def test_metrics_can_require_a_gateway_key(upstream: FakeUpstream) -> None:
    config = anthropic_config(upstream, metrics={"auth": "key"})
    async with running_gateway(build_config(config)) as (url, _):
        status, _, raw = await get(url, "/metrics", key=None)
        assert status == 401
        assert envelope(raw)[0] == "authentication_error"
        status, _, _ = await get(url, "/metrics", key="wrong")
        assert status == 401
        assert "messagegate_requests_total" in await scrape(url, key=GATEWAY_KEY)


async def test_metrics_need_no_key_by_default_and_can_be_off(upstream: FakeUpstream) -> None:
    async with running_gateway(build_config(anthropic_config(upstream))) as (url, _):
        assert "gen_ai_client_token_usage" in await scrape(url)
    config = anthropic_config(upstream, metrics={"enabled": False})
    async with running_gateway(build_config(config)) as (url, _):
        assert (await get(url, "/metrics", key=None))[0] == 404


async def test_metrics_can_have_a_port_of_their_own(upstream: FakeUpstream) -> None:
    port = free_port()
    config = anthropic_config(upstream, metrics={"listen": f"127.0.0.1:{port}", "auth": "key"})
    async with running_gateway(build_config(config)) as (url, _):
        assert (await get(url, "/metrics", key=GATEWAY_KEY))[0] == 404
        own = f"http://127.0.0.1:{port}"
        status, _, raw = await get(own, "/metrics", key=None)
        assert status == 401
        assert envelope(raw)[0] == "authentication_error"
        assert (await get(own, "/v1/models", key=GATEWAY_KEY))[0] == 404
        assert (await get(own, "/metrics", key=GATEWAY_KEY, method="POST"))[0] == 404
        text = await scrape(own, key=GATEWAY_KEY)
    assert total(text, "messagegate_requests_total", endpoint="/metrics", status="404") == 1
    # The listener's refusal for a missing key is counted as the API's auth denials are.
    refused = {"endpoint": "/metrics", "status": "401", "error_type": "authentication_error"}
    assert total(text, "messagegate_requests_total", **refused) == 1
    assert total(text, "messagegate_limit_denials_total", kind="auth") == 1


def test_metrics_auth_key_needs_keys(upstream: FakeUpstream) -> None:
    config = anthropic_config(upstream, metrics={"auth": "key"})
    del config["keys"]
    with pytest.raises(ConfigError, match=r"metrics.auth: 'key' needs gateway keys"):
        build_config(config)
    config["metrics"] = {"listen": "nowhere"}
    with pytest.raises(ConfigError, match=r"metrics.listen: expected HOST:PORT"):
        build_config(config)


def test_the_readme_example_is_valid(upstream: FakeUpstream) -> None:
    example = yaml.safe_load(readme_yaml("observability-config"))
    config = build_config(anthropic_config(upstream, **example))
    assert config.metrics.listen == ("127.0.0.1", 9464)
    assert config.log_format == "text"


def _random_name(rng: random.Random) -> str:
    return "".join(rng.choices(string.ascii_letters + string.digits + "-._", k=24))


def test_ten_thousand_model_names_and_five_thousand_keys_keep_the_series_capped() -> None:
    keys = [{"key": f"k{i:05d}-secret", "name": f"key-{i}"} for i in range(5000)]
    config = build_config(
        {
            "keys": keys,
            "providers": {"p": {"kind": "anthropic", "base_url": "http://127.0.0.1:9"}},
            "models": {"m": {"routes": [{"provider": "p", "model": "m-1"}]}},
            "metrics": {"key_labels": True, "max_key_series": 50},
        }
    )
    metrics = GatewayMetrics(config, clock=lambda: 0.0)
    rng = random.Random(22)

    def finish(i: int) -> None:
        fields = {"model": _random_name(rng), "key": f"key-{i % 5000}", "error": "not_found_error"}
        request = SimpleNamespace(
            path="/v1/messages", status=404, log_fields=fields, served=None, stream_started=0.0
        )
        metrics.finished(request, 0.0, 0.001)

    for i in range(1000):
        finish(i)
    tracemalloc.start()
    before = tracemalloc.take_snapshot()
    for i in range(1000, 10_000):
        finish(i)
    grown = sum(d.size_diff for d in tracemalloc.take_snapshot().compare_to(before, "filename"))
    tracemalloc.stop()
    text = metrics.render().decode()
    keyed = {s.labels["key"] for s in samples(text) if s.name == "messagegate_key_requests_total"}
    assert len(keyed) == 51
    assert "other" in keyed
    models = {s.labels.get("gen_ai_request_model") for s in samples(text)} - {None}
    assert models == {"other"}
    assert len(samples(text)) < 200
    assert total(text, "messagegate_key_requests_total") == 10_000
    # 9,000 more requests with new names and keys: the metrics' memory stays where it was
    # (the key map is bounded by the config's 5,000 keys, each seen once before the snapshot).
    assert grown < 600_000, grown


def test_the_fast_series_expose_what_prometheus_client_would(tmp_path: Path) -> None:
    config = build_config(
        {
            "providers": {"p": {"kind": "openai", "base_url": "http://127.0.0.1:9/v1"}},
            "models": {"m": {"routes": [{"provider": "p", "model": "m-1"}]}},
        }
    )
    route = config.models["m"].routes[0]
    fast = GatewayMetrics(config, clock=lambda: 5.0)
    library = GatewayMetrics(config, clock=lambda: 5.0, shared_directory=str(tmp_path))
    usage = SimpleNamespace(
        input_tokens=70000,
        output_tokens=3,
        cache_read_input_tokens=0,
        cache_creation_input_tokens=1,
    )
    served = SimpleNamespace(
        model=config.models["m"], route=route, attempts=1, started=4.0, answered=4.5,
        value=SimpleNamespace(usage=usage),
    )  # fmt: skip
    for metrics in (fast, library):
        for seconds in (0.0, 0.01, 0.015, 81.92, 100.0):
            fields = {"model": "m", "route": route.label, "attempts": "1"}
            request = SimpleNamespace(
                path="/v1/messages",
                status=200,
                log_fields=fields,
                served=served,
                stream_started=0.0,
            )
            metrics.finished(request, 1.0, 1.0 + seconds)
            metrics.stream_opened(request)
        metrics.attempt_failed(route, 0.02, UpstreamTimeout("slow"))
        metrics.route_failed(route, breaker_open=True)
    expected = {(s.name, tuple(sorted(s.labels.items())), s.value) for s in
                samples(generate_latest(library.registry).decode())}  # fmt: skip
    got = {
        (s.name, tuple(sorted(s.labels.items())), s.value) for s in samples(fast.render().decode())
    }
    assert got == expected
    assert total(fast.render().decode(), "gen_ai_client_token_usage_bucket", le="65536.0") == 5


async def test_breaker_state_and_model_fallbacks(
    upstream: FakeUpstream, second_upstream: FakeUpstream
) -> None:
    upstream.default = script.error_reply(500, "api_error", "boom")
    config = anthropic_config(upstream)
    config["providers"]["spare"] = {"kind": "anthropic", "base_url": second_upstream.url}
    config["models"]["claude-test"]["fallbacks"] = ["backup"]
    config["models"]["backup"] = {"routes": [{"provider": "spare", "model": "spare-1"}]}
    second_upstream.default = script.reply(billed(2, 3))
    clock = FakeClock()
    breaker = BreakerPolicy(failures_to_open=1, cooldown=30)
    body = {"model": "claude-test", "max_tokens": 5, "messages": HELLO}
    async with running_gateway(build_config(config), breaker=breaker, clock=clock) as (url, _):
        assert (await post(url, "/v1/messages", body))[0] == 200
        opened = await scrape(url)
        clock.advance(31)
        upstream.default = script.reply(billed(2, 3))
        assert (await post(url, "/v1/messages", body))[0] == 200
        closed = await scrape(url)
    route = "anth/claude-upstream-1"
    assert total(opened, "messagegate_route_breaker_open", route=route) == 1
    assert total(closed, "messagegate_route_breaker_open", route=route) == 0
    fallbacks = "messagegate_model_fallbacks_total"
    assert total(opened, fallbacks, requested_model="claude-test", model="backup") == 1
    assert total(closed, fallbacks) == 1
    assert (
        total(
            closed,
            "gen_ai_server_request_duration_seconds_count",
            gen_ai_request_model="claude-test",
        )
        == 2
    )


async def test_open_streams_and_client_aborts(upstream: FakeUpstream, sdk: SDK) -> None:
    never = asyncio.Event()
    answer = billed(4, 9)
    upstream.script(Reply(chunks=script.events(answer), hold=never, hold_after=2))
    try:
        async with running_gateway(build_config(anthropic_config(upstream))) as (url, _):
            async with sdk(url).messages.stream(
                model="claude-test", max_tokens=100, messages=HELLO
            ) as stream:
                first = await asyncio.wait_for(anext(aiter(stream)), timeout=30)
                assert first.type == "message_start"
                during = await scrape(url)
            await asyncio.wait_for(upstream.disconnected.wait(), timeout=30)
            # The aborted request's task ends soon after the upstream saw it go: bounded wait.
            for _ in range(200):
                after = await scrape(url)
                if total(after, "messagegate_client_aborts_total") == 1:
                    break
    finally:
        never.set()
    assert total(during, "messagegate_open_streams") == 1
    assert total(after, "messagegate_open_streams") == 0
    assert total(after, "messagegate_client_aborts_total", endpoint="/v1/messages") == 1
    assert total(after, "gen_ai_server_time_to_first_token_seconds_count") == 0  # not a success
    server = "gen_ai_server_request_duration_seconds_count"
    assert total(after, server, error_type="client_disconnected") == 1


async def test_names_served_by_patterns_and_provider_models_add_no_series(
    upstream: FakeUpstream,
) -> None:
    upstream.responder = lambda received: script.reply(
        script.message([{"type": "text", "text": "ok"}], model=received.json["model"])
    )
    config = anthropic_config(upstream)
    config["models"]["claude-*"] = {"routes": [{"provider": "anth"}]}
    async with running_gateway(build_config(config)) as (url, _):
        names = [f"claude-random-{i}" for i in range(30)] + [f"anth/any-{i}" for i in range(30)]
        for name in names:
            body = {"model": name, "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}
            assert (await post(url, "/v1/messages", body))[0] == 200
        text = await scrape(url)
    assert len(upstream.received) == 60

    def values(label: str) -> set[str]:
        return {s.labels[label] for s in samples(text) if label in s.labels}

    assert values("gen_ai_request_model") == {"claude-*", "anth/*", "*"}
    assert values("gen_ai_response_model") == {"claude-*", "*"}
    assert values("route") == {"anth/claude-*", "anth/*"}
    token_sum = total(text, "gen_ai_client_token_usage_sum", gen_ai_token_type="output")
    assert token_sum == 60 * 7
