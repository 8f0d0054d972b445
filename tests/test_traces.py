"""OpenTelemetry traces: spans as the GenAI conventions name them, received over OTLP/HTTP."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import orjson
import pytest

import fakes.anthropic_script as script
from conftest import GATEWAY_KEY, PROVIDER_KEY
from fakes.gateway import build_config, running_gateway
from fakes.otlp import CLIENT_KIND, SERVER_KIND, Receiver, attributes, running_receiver
from fakes.upstream import FakeUpstream
from helpers import anthropic_config, post
from messagegate.config import FailoverPolicy
from messagegate.telemetry.json_logs import JsonFormatter
from test_metrics import two_routes

PROMPT = "the secret plan is 4417"
CLIENT_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
CLIENT_PARENT = "00f067aa0ba902b7"


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with running_receiver() as found:
        yield found


async def test_a_failed_over_request_is_one_server_and_two_client_spans(
    receiver: Receiver, upstream: FakeUpstream, second_upstream: FakeUpstream
) -> None:
    backup = second_upstream
    upstream.default = script.error_reply(503, "overloaded_error", "busy")
    backup.default = script.reply(script.message([{"type": "text", "text": "hi"}]))
    config = build_config(two_routes(upstream, backup, otel={"enabled": True}), receiver.environ)
    once = FailoverPolicy(attempts_per_route=1, backoff_initial=0.0, backoff_max=0.0)
    async with running_gateway(config, failover=once) as (url, _):
        body = {
            "model": "claude-test",
            "max_tokens": 50,
            "messages": [{"role": "user", "content": PROMPT}],
        }
        headers = {"traceparent": f"00-{CLIENT_TRACE}-{CLIENT_PARENT}-01"}
        status, _, _ = await post(url, "/v1/messages", body, headers)
        assert status == 200
    spans = receiver.spans()
    server = [s for s in spans if s.kind == SERVER_KIND]
    clients = sorted(
        (s for s in spans if s.kind == CLIENT_KIND), key=lambda s: s.start_time_unix_nano
    )
    assert len(server) == 1
    assert len(clients) == 2
    (request,) = server
    assert request.name == "chat claude-test"
    assert request.trace_id.hex() == CLIENT_TRACE
    assert request.parent_span_id.hex() == CLIENT_PARENT
    seen = attributes(request)
    assert seen["gen_ai.operation.name"] == "chat"
    assert seen["gen_ai.provider.name"] == "anthropic"
    assert seen["gen_ai.request.model"] == "claude-test"
    assert seen["gen_ai.response.model"] == "spare-1"
    assert seen["gen_ai.usage.input_tokens"] == 11
    assert seen["gen_ai.usage.output_tokens"] == 7
    assert seen["gen_ai.response.finish_reasons"] == ["end_turn"]
    assert seen["messagegate.route"] == "spare/spare-1"
    assert seen["messagegate.attempt"] == 2
    assert "error.type" not in seen
    first, second = clients
    # The first attempt's id was drawn with the request's, the second's on its own: all differ.
    assert len({request.span_id, first.span_id, second.span_id}) == 3
    assert [c.name for c in clients] == ["chat claude-upstream-1", "chat spare-1"]
    for attempt in clients:
        assert attempt.trace_id.hex() == CLIENT_TRACE
        assert attempt.parent_span_id == request.span_id
        assert attributes(attempt)["gen_ai.request.max_tokens"] == 50
    assert attributes(first)["error.type"] == "503"
    assert attributes(first)["messagegate.attempt"] == 1
    assert "error.type" not in attributes(second)
    assert attributes(second)["gen_ai.usage.output_tokens"] == 7
    assert attributes(second)["server.address"] == "127.0.0.1"
    # Each upstream got its own attempt's traceparent.
    for fake, attempt in ((upstream, first), (backup, second)):
        (received,) = fake.received
        expected = f"00-{CLIENT_TRACE}-{attempt.span_id.hex()}-01"
        assert received.headers["traceparent"] == expected
    raw = b"".join(receiver.bodies)
    for secret in (PROMPT, GATEWAY_KEY, PROVIDER_KEY):
        assert secret.encode() not in raw


async def test_content_is_captured_only_when_asked(
    receiver: Receiver, upstream: FakeUpstream
) -> None:
    upstream.default = script.reply(script.message([{"type": "text", "text": "the answer 9d1"}]))
    body = {
        "model": "claude-test",
        "max_tokens": 5,
        "messages": [{"role": "user", "content": PROMPT}],
    }
    config = anthropic_config(upstream, otel={"enabled": True, "capture_content": True})
    async with running_gateway(build_config(config, receiver.environ)) as (url, _):
        assert (await post(url, "/v1/messages", body))[0] == 200
    raw = b"".join(receiver.bodies)
    assert PROMPT.encode() in raw
    assert b"the answer 9d1" in raw
    assert "traceparent" in upstream.received[0].headers
    (attempt,) = [s for s in receiver.spans() if s.kind == CLIENT_KIND]
    assert PROMPT in attributes(attempt)["gen_ai.input.messages"]


async def test_without_otel_nothing_is_traced_or_sent_upstream(upstream: FakeUpstream) -> None:
    upstream.default = script.reply(script.message([{"type": "text", "text": "hi"}]))
    async with running_gateway(build_config(anthropic_config(upstream))) as (url, app):
        body = {
            "model": "claude-test",
            "max_tokens": 5,
            "messages": [{"role": "user", "content": "x"}],
        }
        headers = {"traceparent": f"00-{CLIENT_TRACE}-{CLIENT_PARENT}-01"}
        assert (await post(url, "/v1/messages", body, headers))[0] == 200
        assert app.tracing is None
    assert "traceparent" not in upstream.received[0].headers


async def test_the_access_line_names_the_trace(
    receiver: Receiver, upstream: FakeUpstream, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="messagegate.access")
    upstream.default = script.reply(script.message([{"type": "text", "text": "hi"}]))
    config = anthropic_config(upstream, otel={"enabled": True})
    async with running_gateway(build_config(config, receiver.environ)) as (url, _):
        body = {
            "model": "claude-test",
            "max_tokens": 5,
            "messages": [{"role": "user", "content": "x"}],
        }
        assert (await post(url, "/v1/messages", body))[0] == 200
    (span,) = [s for s in receiver.spans() if s.kind == SERVER_KIND]
    (record,) = [r for r in caplog.records if r.name == "messagegate.access"]
    assert f"trace_id={span.trace_id.hex()} " in record.getMessage()
    assert orjson.loads(JsonFormatter().format(record))["trace_id"] == span.trace_id.hex()


async def test_a_sampled_out_request_still_carries_its_trace_upstream(
    receiver: Receiver, upstream: FakeUpstream
) -> None:
    upstream.default = script.reply(script.message([{"type": "text", "text": "hi"}]))
    config = anthropic_config(upstream, otel={"enabled": True})
    environ = receiver.environ | {"OTEL_TRACES_SAMPLER": "always_off"}
    async with running_gateway(build_config(config, environ)) as (url, _):
        body = {
            "model": "claude-test",
            "max_tokens": 5,
            "messages": [{"role": "user", "content": "x"}],
        }
        headers = {"traceparent": f"00-{CLIENT_TRACE}-{CLIENT_PARENT}-00"}
        assert (await post(url, "/v1/messages", body, headers))[0] == 200
    assert receiver.spans() == []
    sent = upstream.received[0].headers["traceparent"]
    version, trace_id, parent, flags = sent.split("-")
    assert (version, trace_id, flags) == ("00", CLIENT_TRACE, "00")
    assert len(parent) == 16


async def test_a_streamed_answers_usage_is_on_the_requests_span(
    receiver: Receiver, upstream: FakeUpstream
) -> None:
    upstream.default = script.stream_reply(script.message([{"type": "text", "text": "hi"}]))
    config = anthropic_config(upstream, otel={"enabled": True})
    async with running_gateway(build_config(config, receiver.environ)) as (url, _):
        body = {
            "model": "claude-test",
            "max_tokens": 5,
            "stream": True,
            "messages": [{"role": "user", "content": "x"}],
        }
        status, _, raw = await post(url, "/v1/messages", body)
        assert status == 200
        assert b"message_stop" in raw
    (request,) = [s for s in receiver.spans() if s.kind == SERVER_KIND]
    (attempt,) = [s for s in receiver.spans() if s.kind == CLIENT_KIND]
    assert attributes(request)["gen_ai.usage.output_tokens"] == 7
    assert attributes(attempt)["gen_ai.response.model"] == "claude-upstream-1"
    assert "error.type" not in attributes(attempt)
    assert attempt.parent_span_id == request.span_id
