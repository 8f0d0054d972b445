"""OpenTelemetry traces in the GenAI conventions: one SERVER span per request, one CLIENT span
per upstream attempt, the client's W3C ``traceparent`` continued and sent upstream.

The request path only records: ids from a fast generator, wall-clock nanoseconds, the values of
a span's attributes in one tuple (`span_record`), queued for `otlp_export`, which encodes and
sends them between requests. No OpenTelemetry SDK: its ~20 us a span was 3.3x a request's
instructions. Every attribute is a typed value picked here (never a header or a key); prompt
and answer text become attributes only with ``otel: {capture_content: true}``.
"""

from __future__ import annotations

import random
from contextvars import ContextVar, Token
from time import time_ns
from typing import Any
from urllib.parse import urlsplit

import orjson

from messagegate import __version__
from messagegate.config import OtelSettings, Route
from messagegate.errors import GatewayError
from messagegate.telemetry.metrics import MESSAGES_PATH, OPERATION, error_type_of, provider_name
from messagegate.telemetry.otlp_export import Dropped, OtlpExporter, SpanQueue
from messagegate.telemetry.otlp_json import JsonEncoder
from messagegate.telemetry.otlp_protobuf import ProtobufEncoder
from messagegate.telemetry.span_record import (
    CLIENT_KIND,
    SERVER_KIND,
    AttributeGroup,
    answer_values,
)
from messagegate.telemetry.trace_context import Sampler, parse_traceparent

_GROUPS_MAX = 4096
_NUMBER = (int, float)
_NO_ANSWER = (None, None, None, None, None, None)

# The request being served: [trace id, its span's id, parent span id, tracestate, sampled,
# trace id in hex, start, the answer's values as its attempt's span read them (or None)].
# The attempts' spans are its span's children.
RequestTrace = list[Any]
_ANSWER = 7
_ACTIVE: ContextVar[RequestTrace] = ContextVar("messagegate_request_trace")


class Tracing:
    """The gateway's tracer: `start_request`/`finish_request` around each request, `attempt`
    around each upstream attempt (routing's `AttemptTracer`)."""

    def __init__(self, settings: OtelSettings, dropped: Dropped | None = None) -> None:
        otlp = settings.otlp
        self.capture_content = settings.capture_content
        self.sampler = Sampler(otlp.sampler, otlp.ratio)
        self.queue = SpanQueue(otlp.max_queue_size, otlp.max_export_batch_size, dropped or _ignore)
        encoder = JsonEncoder if otlp.protocol == "http/json" else ProtobufEncoder
        self.exporter = OtlpExporter(otlp, self.queue, encoder(otlp.resource, __version__))
        self._bits = random.Random().getrandbits
        self._paths: dict[tuple[str, str], AttributeGroup] = {}
        self._routes: dict[str, tuple[str, AttributeGroup, str]] = {}
        self._names: dict[str, str] = {}

    def start(self) -> None:
        """Begin exporting (on the running loop)."""
        self.exporter.start()

    async def close(self) -> None:
        """Export what is left, for at most the export timeout."""
        await self.exporter.close()

    # -- the SERVER span ---------------------------------------------------------------------

    def start_request(self, request: Any) -> Token[RequestTrace]:
        """A request arrived: its trace is current (for the attempts) until `finish_request`."""
        header = request.headers.get("traceparent")
        parent = None if header is None else parse_traceparent(header, request.headers)
        if parent is None:
            ids = self._bits(192).to_bytes(24, "big")
            trace, span = ids[:16], ids[16:]
            parent_id, state = b"", ""
            sampled = self.sampler.always or self.sampler.root(trace)
        else:
            trace, parent_id, state = parent.trace_id, parent.span_id, parent.trace_state
            span = self._bits(64).to_bytes(8, "big")
            sampled = self.sampler.child(trace, parent.sampled)
        trace_hex = trace.hex()
        request.log_fields["trace_id"] = trace_hex
        return _ACTIVE.set([trace, span, parent_id, state, sampled, trace_hex, time_ns(), None])

    def finish_request(self, request: Any, token: Token[RequestTrace]) -> None:
        trace, span, parent, state, sampled, _, start, answer = _ACTIVE.get()
        _ACTIVE.reset(token)
        if not sampled:
            return
        fields = request.log_fields
        error = fields.get("error") or fields.get("stream_error")
        method, path, status = request.method, request.path, request.status
        group = self._paths.get((method, path)) or self._path_group(method, path)
        model = fields.get("model") if path == MESSAGES_PATH else None
        served = None if model is None else request.served
        if served is None:
            answer = _NO_ANSWER
        elif answer is None:  # a stream's: its attempt's span ended at its first event
            answer = answer_values(served.value)
        inputs, outputs, read, created, answer_id, reasons = answer
        if served is None:
            provider = route = attempts = response_model = fallback = None
        else:
            served_route = served.route
            provider = (self._routes.get(served_route.label) or self._route(served_route))[0]
            route, attempts = served_route.label, served.attempts
            response_model = served_route.model
            fallback = served.model.name if "fallback_model" in fields else None
        # A model's spans share one name string: the encoder's cache hashes it once.
        name = f"{method} {path}" if model is None else self._names.get(model) or self._name(model)
        operation = None if model is None else OPERATION
        # Kind, name, group, then span_record.STABLE_ATTRIBUTES' values in their order.
        stable = (
            SERVER_KIND, name, group, status, operation, provider, route, attempts,
            None, None, None, None, read, created, model, response_model, fallback, error,
            reasons,
        )  # fmt: skip
        content = None
        if self.capture_content and served is not None:
            content = (None, None, _output(served.value))
        end = time_ns()
        record = (
            trace,
            span,
            parent,
            state,
            start,
            end,
            stable,
            inputs,
            outputs,
            answer_id,
            content,
        )
        self.queue.add(record)

    def _path_group(self, method: str, path: str) -> AttributeGroup:
        group = AttributeGroup((("http.request.method", method), ("url.path", path)))
        if len(self._paths) >= _GROUPS_MAX:
            self._paths.clear()  # paths come from clients: a bounded memory of them
        self._paths[method, path] = group
        return group

    def _name(self, model: str) -> str:
        name = f"{OPERATION} {model}"
        if len(self._names) >= _GROUPS_MAX:
            self._names.clear()  # model names come from clients: a bounded memory of them
        self._names[model] = name
        return name

    # -- the CLIENT spans -------------------------------------------------------------------

    def attempt(self, call: Any, number: int) -> TracedAttempt:
        """An upstream attempt starts: its span, and the trace headers it sends upstream."""
        active = _ACTIVE.get(None)
        if active is None:
            return TracedAttempt({}, None, call, number, active, b"")
        trace_hex, state = active[5], active[3]
        if active[4]:
            span, flags, tracing = self._bits(64).to_bytes(8, "big"), "01", self
        else:
            # Sampled out: no span of its own; the request's context goes upstream.
            span, flags, tracing = active[1], "00", None
        headers = {"traceparent": f"00-{trace_hex}-{span.hex()}-{flags}"}
        if state:
            headers["tracestate"] = state
        return TracedAttempt(headers, tracing, call, number, active, span)

    def _route(self, route: Route) -> tuple[str, AttributeGroup, str]:
        """A route's provider name, its attempts' shared attributes and their span name."""
        provider = provider_name(route)
        url = urlsplit(route.provider.base_url)
        pairs: list[tuple[str, str | int]] = [
            ("gen_ai.operation.name", OPERATION),
            ("gen_ai.provider.name", provider),
            ("gen_ai.request.model", route.model),
            ("messagegate.route", route.label),
            ("server.address", url.hostname or ""),
        ]
        if url.port is not None:
            pairs.append(("server.port", url.port))
        known = (provider, AttributeGroup(tuple(pairs)), f"{OPERATION} {route.model}")
        if len(self._routes) >= _GROUPS_MAX:
            self._routes.clear()
        self._routes[route.label] = known
        return known


class TracedAttempt:
    """One upstream attempt's span; `headers` carry its ``traceparent`` upstream."""

    __slots__ = ("call", "headers", "number", "request", "span", "start", "tracing")

    def __init__(
        self,
        headers: Any,
        tracing: Tracing | None,
        call: Any,
        number: int,
        request: RequestTrace | None,
        span: bytes,
    ) -> None:
        self.headers = headers
        self.tracing = tracing
        self.call = call
        self.number = number
        self.request = request
        self.span = span
        self.start = time_ns()

    def end(self, error: GatewayError | None, value: object = None) -> None:
        tracing, request = self.tracing, self.request
        if tracing is None or request is None:
            return
        call = self.call
        route = call.route
        _, group, name = tracing._routes.get(route.label) or tracing._route(route)
        if error is None:
            response_model, error_type = route.model, None
            # A whole answer; a stream's usage and stop reason are known at its end only,
            # and the request's span has them.
            if hasattr(value, "body"):
                answer = request[_ANSWER] = answer_values(value)
            else:
                answer = _NO_ANSWER
        else:
            response_model, error_type, answer = None, error_type_of(error), _NO_ANSWER
        inputs, outputs, read, created, answer_id, reasons = answer
        body = call.body
        max_tokens, top_k = body.get("max_tokens"), body.get("top_k")
        temperature, top_p = body.get("temperature"), body.get("top_p")
        # Kind, name, group, then span_record.STABLE_ATTRIBUTES' values in their order.
        stable = (
            CLIENT_KIND, name, group, None, None, None, None, self.number,
            max_tokens if type(max_tokens) is int else None,
            float(temperature) if type(temperature) in _NUMBER else None,
            float(top_p) if type(top_p) in _NUMBER else None,
            top_k if type(top_k) is int else None,
            read, created, None, response_model, None, error_type, reasons,
        )  # fmt: skip
        content = None
        if tracing.capture_content:
            content = (*_input(body), None if error is not None else _output(value))
        trace, parent, state = request[0], request[1], request[3]
        record = (
            trace, self.span, parent, state, self.start, time_ns(), stable, inputs, outputs,
            answer_id, content,
        )  # fmt: skip
        tracing.queue.add(record)


def _input(body: Any) -> tuple[str | None, str | None]:
    system = body.get("system")
    return _json(body.get("messages")), None if system is None else _json(system)


def _output(value: object) -> str | None:
    body = getattr(value, "body", None)
    if type(body) is dict and "content" in body:
        return _json(body["content"])
    return None


def _ignore(reason: str, count: int) -> None:
    pass


def _json(value: object) -> str:
    return orjson.dumps(value).decode()
