"""Traces' settings, sampling, provider names and the OTLP exporter's retries and drops."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import orjson
import pytest

import fakes.anthropic_script as script
from fakes.gateway import build_config, running_gateway
from fakes.otlp import SERVER_KIND, Receiver, running_receiver
from fakes.upstream import FakeUpstream
from helpers import anthropic_config, post
from messagegate.config import ConfigError
from messagegate.config.otel_env import OtelVariableError, parse_otlp
from messagegate.telemetry.metrics import provider_name
from messagegate.telemetry.otlp_export import Sender, SpanQueue
from messagegate.telemetry.trace_context import Sampler, parse_traceparent
from test_metrics import scrape, total

BODY = {"model": "claude-test", "max_tokens": 5, "messages": [{"role": "user", "content": "x"}]}
TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with running_receiver() as found:
        yield found


def test_the_specifications_defaults_and_each_variable() -> None:
    default = parse_otlp({})
    assert default.endpoint == "http://localhost:4318/v1/traces"
    assert (default.protocol, default.timeout, default.sampler) == (
        "http/protobuf",
        10.0,
        "parentbased_always_on",
    )
    assert (default.max_queue_size, default.max_export_batch_size) == (2048, 512)
    assert default.resource == (("service.name", "messagegate"),)
    settings = parse_otlp(
        {
            "OTEL_EXPORTER_OTLP_ENDPOINT": "https://collector:4318/",
            "OTEL_EXPORTER_OTLP_HEADERS": "Api-Key=a%20b, x-team=7",
            "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT": "2500",
            "OTEL_EXPORTER_OTLP_PROTOCOL": "http/json",
            "OTEL_EXPORTER_OTLP_COMPRESSION": "gzip",
            "OTEL_SERVICE_NAME": "edge",
            "OTEL_RESOURCE_ATTRIBUTES": "service.name=ignored,deployment.environment=prod",
            "OTEL_TRACES_SAMPLER": "parentbased_traceidratio",
            "OTEL_TRACES_SAMPLER_ARG": "0.25",
            "OTEL_BSP_MAX_QUEUE_SIZE": "100",
            "OTEL_BSP_MAX_EXPORT_BATCH_SIZE": "10",
            "OTEL_BSP_SCHEDULE_DELAY": "50",
        }
    )
    assert settings.endpoint == "https://collector:4318/v1/traces"
    assert settings.headers == (("api-key", "a b"), ("x-team", "7"))
    assert (settings.timeout, settings.protocol, settings.compression) == (2.5, "http/json", "gzip")
    assert dict(settings.resource) == {"service.name": "edge", "deployment.environment": "prod"}
    assert (settings.sampler, settings.ratio) == ("parentbased_traceidratio", 0.25)
    assert (settings.max_queue_size, settings.max_export_batch_size) == (100, 10)
    assert settings.schedule_delay == 0.05
    assert "a b" not in repr(settings)
    # The traces-only endpoint is used as it is.
    only = {"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://c:9/custom"}
    assert (
        parse_otlp(only | {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://x"}).endpoint
        == "http://c:9/custom"
    )


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({"OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}, "grpc is not built in"),
        ({"OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "thrift"}, "TRACES_PROTOCOL: expected"),
        ({"OTEL_TRACES_SAMPLER": "jaeger_remote"}, "OTEL_TRACES_SAMPLER: expected one of"),
        ({"OTEL_TRACES_SAMPLER": "traceidratio", "OTEL_TRACES_SAMPLER_ARG": "2"}, "ratio"),
        ({"OTEL_BSP_MAX_QUEUE_SIZE": "0"}, "OTEL_BSP_MAX_QUEUE_SIZE"),
        ({"OTEL_BSP_MAX_QUEUE_SIZE": "5", "OTEL_BSP_MAX_EXPORT_BATCH_SIZE": "6"}, "exceeds"),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "collector:4318"}, "http:// or https://"),
        ({"OTEL_EXPORTER_OTLP_HEADERS": "novalue"}, "key=value"),
        ({"OTEL_EXPORTER_OTLP_TIMEOUT": "soon"}, "OTEL_EXPORTER_OTLP_TIMEOUT"),
    ],
)
def test_an_invalid_variable_is_named(environ: dict[str, str], message: str) -> None:
    with pytest.raises(OtelVariableError, match=message):
        parse_otlp(environ)


def test_an_invalid_variable_is_a_config_error_only_with_otel_on(upstream: FakeUpstream) -> None:
    grpc = {"OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}
    with pytest.raises(ConfigError, match=r"otel: OTEL_EXPORTER_OTLP_PROTOCOL: grpc"):
        build_config(anthropic_config(upstream, otel={"enabled": True}), grpc)
    assert not build_config(anthropic_config(upstream), grpc).otel.enabled


def test_samplers_decide_as_the_specification_says() -> None:
    low = "0" * 16 + f"{5:016x}"
    high = "0" * 16 + "f" * 16
    ratio = Sampler("traceidratio", 0.5)
    assert (ratio.root(low), ratio.root(high), ratio.child(low, False)) == (True, False, True)
    based = Sampler("parentbased_traceidratio", 0.5)
    assert (based.root(high), based.child(high, True), based.child(low, False)) == (
        False,
        True,
        False,
    )
    assert Sampler("always_on", 0.0).always
    assert not Sampler("always_off", 1.0).root(low)
    assert not Sampler("parentbased_always_off", 1.0).root(low)
    assert Sampler("parentbased_always_off", 1.0).child(low, True)


@pytest.mark.parametrize(
    "header",
    [
        f"00-{TRACE}-00f067aa0ba902b7-01-extra",  # version 00 has no more fields
        f"00-{TRACE.upper()}-00f067aa0ba902b7-01",
        f"00-{'0' * 32}-00f067aa0ba902b7-01",
        f"00-{TRACE}-0000000000000000-01",
        f"ff-{TRACE}-00f067aa0ba902b7-01",
        f"00_{TRACE}-00f067aa0ba902b7-01",
        "garbage",
    ],
)
def test_a_malformed_traceparent_is_ignored(header: str) -> None:
    assert parse_traceparent(header, {}) is None


def test_a_later_traceparent_version_and_tracestate_are_read() -> None:
    parent = parse_traceparent(f"01-{TRACE}-00f067aa0ba902b7-00-future", {"tracestate": "a=1"})
    assert parent is not None
    assert (parent.trace_id, parent.span_id) == (TRACE, "00f067aa0ba902b7")
    assert (parent.sampled, parent.trace_state) == (False, "a=1")


@pytest.mark.parametrize(
    ("name", "kind", "base_url", "expected"),
    [
        ("mistral", "openai", "https://api.mistral.ai/v1", "mistral_ai"),
        ("mine", "openai", "https://api.mistral.ai/v1", "mistral_ai"),
        ("deepseek", "openai", "http://127.0.0.1:9/v1", "deepseek"),
        ("groq", "openai", "https://api.groq.com/openai/v1", "groq"),
        ("az", "openai", "https://team.openai.azure.com/openai/v1", "azure.ai.openai"),
        ("vx", "openai", "https://us-aiplatform.googleapis.com/v1", "gcp.vertex_ai"),
        ("br", "openai", "https://bedrock-runtime.us-east-1.amazonaws.com/v1", "aws.bedrock"),
        ("grok", "openai", "https://api.x.ai/v1", "x_ai"),
        ("pplx", "openai", "https://api.perplexity.ai", "perplexity"),
        ("claude", "anthropic", "https://api.anthropic.com", "anthropic"),
        ("together", "openai", "https://api.together.xyz/v1", "openai"),
        ("local", "openai", "http://127.0.0.1:8000/v1", "openai"),
        ("proxy", "anthropic", "http://10.0.0.2:8080", "anthropic"),
    ],
)
def test_provider_names_are_the_conventions_well_known_values(
    name: str, kind: str, base_url: str, expected: str
) -> None:
    route: Any = type("R", (), {"provider": type("P", (), {})()})()
    provider = route.provider
    provider.name, provider.kind, provider.base_url = name, kind, base_url
    assert provider_name(route) == expected


async def test_a_refused_export_is_retried_as_retry_after_says(
    receiver: Receiver, upstream: FakeUpstream
) -> None:
    receiver.refusals = [(503, {"retry-after": "0"}), (429, {"retry-after": "0"})]
    upstream.default = script.reply(script.message([{"type": "text", "text": "hi"}]))
    environ = receiver.environ | {
        "OTEL_EXPORTER_OTLP_HEADERS": "x-tenant=t%2F1",
        "OTEL_EXPORTER_OTLP_COMPRESSION": "gzip",
    }
    config = build_config(anthropic_config(upstream, otel={"enabled": True}), environ)
    async with running_gateway(config) as (url, _):
        assert (await post(url, "/v1/messages", BODY))[0] == 200
    assert len(receiver.requests) == 3
    assert all(
        r["x-tenant"] == "t/1" and r["content-encoding"] == "gzip" for r in receiver.requests
    )
    assert [s.kind for s in receiver.spans()].count(SERVER_KIND) == 1


async def test_a_batch_the_endpoint_refuses_is_dropped_and_counted(
    receiver: Receiver, upstream: FakeUpstream
) -> None:
    # 400 is final: the batch is dropped, not retried.
    receiver.refusals = [(400, {})]
    upstream.default = script.reply(script.message([{"type": "text", "text": "hi"}]))
    environ = receiver.environ | {
        "OTEL_BSP_MAX_QUEUE_SIZE": "2",
        "OTEL_BSP_MAX_EXPORT_BATCH_SIZE": "2",
        "OTEL_BSP_SCHEDULE_DELAY": "3600000",
    }
    config = build_config(anthropic_config(upstream, otel={"enabled": True}), environ)
    name = "messagegate_trace_spans_dropped_total"
    async with running_gateway(config) as (url, _):
        # Two spans a request: one whole batch.
        assert (await post(url, "/v1/messages", BODY))[0] == 200
        for _ in range(500):  # the batch's export runs in the exporter's thread
            text = await scrape(url)
            if total(text, name, reason="export_failed"):
                break
            await asyncio.sleep(0.01)
    assert total(text, name, reason="export_failed") == 2
    assert total(text, name, reason="queue_full") == 0
    # What arrived later is the scrapes' spans: the refused ones were not sent again.
    assert {s.name for s in receiver.spans()} == {"GET /metrics"}


def test_a_full_queue_drops_and_counts_rather_than_grows() -> None:
    dropped: list[tuple[str, int]] = []
    queue = SpanQueue(3, 2, lambda reason, count: dropped.append((reason, count)))
    for n in range(5):
        queue.add([n], 1)
    assert queue.records == [[0], [1], [2]]
    assert dropped == [("queue_full", 1), ("queue_full", 1)]
    assert queue.take() == ([[0], [1]], 2)
    assert (queue.records, queue.spans) == ([[2]], 1)


def test_a_requests_spans_are_queued_taken_and_dropped_together() -> None:
    dropped: list[tuple[str, int]] = []
    queue = SpanQueue(6, 4, lambda reason, count: dropped.append((reason, count)))
    for n, spans in enumerate((2, 3, 2, 1)):
        queue.add([n], spans)
    # 2 + 3 spans queued; 2 more would pass the limit of 6, 1 more does not.
    assert (queue.records, queue.spans, dropped) == ([[0], [1], [3]], 6, [("queue_full", 2)])
    # A batch holds at most 4 spans: the first request's 2, not the second's 3 too.
    assert queue.take() == ([[0]], 2)
    assert queue.take() == ([[1], [3]], 4)
    queue.add([4], 5)
    # A request with more spans than a batch holds is a batch of its own.
    assert queue.take() == ([[4]], 5)
    assert (queue.records, queue.spans) == ([], 0)


async def test_http_json_is_sent_as_json(receiver: Receiver, upstream: FakeUpstream) -> None:
    upstream.default = script.reply(script.message([{"type": "text", "text": "hi"}]))
    environ = receiver.environ | {"OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "http/json"}
    config = build_config(anthropic_config(upstream, otel={"enabled": True}), environ)
    async with running_gateway(config) as (url, _):
        headers = {"traceparent": f"00-{TRACE}-00f067aa0ba902b7-01"}
        assert (await post(url, "/v1/messages", BODY, headers))[0] == 200
    (request,) = receiver.requests
    assert request["content-type"] == "application/json"
    (body,) = receiver.bodies
    spans = orjson.loads(body)["resourceSpans"][0]["scopeSpans"][0]["spans"]
    assert sorted(s["kind"] for s in spans) == [2, 3]
    assert {s["traceId"] for s in spans} == {TRACE}


def test_the_sender_gives_up_at_its_deadline_without_waiting_past_it() -> None:
    waits: list[float] = []
    now = [0.0]

    def sleep(seconds: float) -> None:
        waits.append(seconds)
        now[0] += seconds

    settings = parse_otlp({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://127.0.0.1:1/v1/traces"})
    sender = Sender(settings, sleep=sleep, clock=lambda: now[0])
    assert not sender.send(b"x", deadline=5.0)
    # Connection refused each time: backoffs of about 1, 2 (, 4) seconds, none past the deadline.
    assert waits
    assert sum(waits) < 5.0
    assert all(0.5 * 2**n <= w <= 2**n for n, w in enumerate(waits))
