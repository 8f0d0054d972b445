"""OpenTelemetry traces in the GenAI conventions: one SERVER span per request, one CLIENT span
per upstream attempt, the client's W3C ``traceparent`` continued and sent upstream.

Only imported with ``otel: {enabled: true}``: the SDK and the OTLP exporter are the ``otel``
extra, and the exporter, sampler and resource read the standard ``OTEL_*`` variables. Every
attribute is a typed value picked here (never a header or a key); prompt and answer text
become attributes only with ``otel: {capture_content: true}``.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Mapping
from contextvars import Token
from typing import Any
from urllib.parse import urlsplit

import orjson
from opentelemetry import context, trace
from opentelemetry.context import Context
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter
from opentelemetry.trace import Span, SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from messagegate.errors import GatewayError
from messagegate.telemetry.metrics import MESSAGES_PATH, OPERATION, error_type_of, provider_name

# Request parameters copied to the spans: (body field, attribute), numbers only.
_REQUEST_PARAMETERS = (
    ("max_tokens", "gen_ai.request.max_tokens"),
    ("temperature", "gen_ai.request.temperature"),
    ("top_p", "gen_ai.request.top_p"),
    ("top_k", "gen_ai.request.top_k"),
)
_PROPAGATOR = TraceContextTextMapPropagator()


class Tracing:
    """The gateway's tracer; `exporter` is the OTLP one unless a test gives its own."""

    def __init__(self, capture_content: bool, exporter: SpanExporter | None = None) -> None:
        if exporter is None:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

            exporter = OTLPSpanExporter()
        self.capture_content = capture_content
        self.provider = TracerProvider(resource=Resource.create({"service.name": "messagegate"}))
        self.provider.add_span_processor(BatchSpanProcessor(exporter))
        self.tracer = self.provider.get_tracer("messagegate")
        self._servers: dict[str, tuple[str, int | None]] = {}

    # -- the SERVER span ---------------------------------------------------------------------

    def start_request(self, request: Any) -> tuple[Span, Token[Context]]:
        """A request arrived: its span, current (for the attempts' spans) until `finish_request`."""
        parent = _PROPAGATOR.extract(request.headers)
        span = self.tracer.start_span(
            f"{request.method} {request.path}",
            context=parent,
            kind=SpanKind.SERVER,
            attributes={"http.request.method": request.method, "url.path": request.path},
        )
        trace_id = span.get_span_context().trace_id
        if trace_id:
            request.log_fields["trace_id"] = f"{trace_id:032x}"
        return span, context.attach(trace.set_span_in_context(span, parent))

    def finish_request(self, request: Any, handle: tuple[Span, Token[Context]]) -> None:
        span, token = handle
        context.detach(token)
        if not span.is_recording():
            # Sampled out: attributes would be dropped, so none are gathered.
            span.end()
            return
        fields = request.log_fields
        span.set_attribute("http.response.status_code", request.status)
        error = fields.get("error") or fields.get("stream_error")
        if request.path == MESSAGES_PATH and "model" in fields:
            span.update_name(f"{OPERATION} {fields['model']}")
            span.set_attribute("gen_ai.operation.name", OPERATION)
            span.set_attribute("gen_ai.request.model", fields["model"])
            if request.served is not None:
                self._served(span, request.served, fields)
        if error is not None:
            span.set_attribute("error.type", error)
            span.set_status(Status(StatusCode.ERROR))
        span.end()

    def _served(self, span: Span, served: Any, fields: Mapping[str, str]) -> None:
        route = served.route
        span.set_attribute("gen_ai.provider.name", provider_name(route))
        span.set_attribute("gen_ai.response.model", route.model)
        span.set_attribute("messagegate.route", route.label)
        span.set_attribute("messagegate.attempt", served.attempts)
        if "fallback_model" in fields:
            span.set_attribute("messagegate.fallback_model", served.model.name)
        self._answer(span, served.value)

    def _answer(self, span: Span, value: Any) -> None:
        usage = getattr(value, "usage", None)
        if usage is not None:
            span.set_attribute(
                "gen_ai.usage.input_tokens",
                usage.input_tokens
                + usage.cache_read_input_tokens
                + usage.cache_creation_input_tokens,
            )
            span.set_attribute("gen_ai.usage.output_tokens", usage.output_tokens)
            span.set_attribute(
                "gen_ai.usage.cache_read.input_tokens", usage.cache_read_input_tokens
            )
            span.set_attribute(
                "gen_ai.usage.cache_creation.input_tokens", usage.cache_creation_input_tokens
            )
        body = getattr(value, "body", None)
        if isinstance(body, dict):
            if isinstance(body.get("id"), str):
                span.set_attribute("gen_ai.response.id", body["id"])
            if isinstance(body.get("stop_reason"), str):
                span.set_attribute("gen_ai.response.finish_reasons", [body["stop_reason"]])
            if self.capture_content and "content" in body:
                span.set_attribute("gen_ai.output.messages", _json(body["content"]))

    # -- the CLIENT spans -------------------------------------------------------------------

    def attempt(self, call: Any, number: int) -> TracedAttempt:
        """An upstream attempt starts: its span, and the call with its ``traceparent``."""
        headers = dict(call.headers)
        if not trace.get_current_span().is_recording():
            # The request was sampled out: no span of its own, the request's context goes upstream.
            _PROPAGATOR.inject(headers)
            return TracedAttempt(self, None, dataclasses.replace(call, headers=headers))
        span = self.tracer.start_span(
            f"{OPERATION} {call.route.model}",
            kind=SpanKind.CLIENT,
            attributes=self._attempt_attributes(call, number),
        )
        _PROPAGATOR.inject(headers, context=trace.set_span_in_context(span))
        return TracedAttempt(self, span, dataclasses.replace(call, headers=headers))

    def _attempt_attributes(self, call: Any, number: int) -> dict[str, Any]:
        route = call.route
        attributes: dict[str, Any] = {
            "gen_ai.operation.name": OPERATION,
            "gen_ai.provider.name": provider_name(route),
            "gen_ai.request.model": route.model,
            "messagegate.route": route.label,
            "messagegate.attempt": number,
        }
        host, port = self._server(route.provider)
        attributes["server.address"] = host
        if port is not None:
            attributes["server.port"] = port
        body = call.body
        for field, name in _REQUEST_PARAMETERS:
            value = body.get(field)
            if isinstance(value, int | float) and not isinstance(value, bool):
                attributes[name] = value
        if self.capture_content:
            attributes["gen_ai.input.messages"] = _json(body.get("messages"))
            if "system" in body:
                attributes["gen_ai.system_instructions"] = _json(body["system"])
        return attributes

    def _server(self, provider: Any) -> tuple[str, int | None]:
        known = self._servers.get(provider.name)
        if known is None:
            url = urlsplit(provider.base_url)
            known = self._servers[provider.name] = (url.hostname or "", url.port)
        return known

    async def close(self) -> None:
        """Export what is left (in a thread: the exporter's HTTP call blocks)."""
        await asyncio.to_thread(self.provider.shutdown)


class TracedAttempt:
    """One upstream attempt's span; `call` carries its ``traceparent`` upstream."""

    __slots__ = ("call", "span", "tracing")

    def __init__(self, tracing: Tracing, span: Span | None, call: Any) -> None:
        self.tracing = tracing
        self.span = span
        self.call = call

    def end(self, error: GatewayError | None, value: object = None) -> None:
        if self.span is None:
            return
        if error is not None:
            self.span.set_attribute("error.type", error_type_of(error))
            self.span.set_status(Status(StatusCode.ERROR))
        else:
            self.span.set_attribute("gen_ai.response.model", self.call.route.model)
            if hasattr(value, "body"):
                # A whole answer; a stream's usage and stop reason are known at its end only,
                # and the request's span has them.
                self.tracing._answer(self.span, value)
        self.span.end()


def _json(value: object) -> str:
    return orjson.dumps(value).decode()
