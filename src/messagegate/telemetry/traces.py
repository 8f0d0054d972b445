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
    ANSWER_CREATED,
    ANSWER_READ,
    ANSWER_REASONS,
    CLIENT_KIND,
    SERVER_KIND,
    AttributeGroup,
    answer_values,
)
from messagegate.telemetry.trace_context import Sampler, parse_traceparent

_GROUPS_MAX = 4096

# The request being served: [trace id, its span's id, parent span id, tracestate, sampled,
# trace id in hex, start, the answer's values as its attempt's span read them (or None), the
# ids drawn with it (or None once its first attempt took the last 8 bytes)].
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
        self._routes: dict[int, tuple[Route, str, AttributeGroup, str, str]] = {}
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
            # One draw for the trace, its span and its first attempt's span.
            ids = self._bits(256).to_bytes(32, "big")
            trace = ids[:16]
            parent_id, state = b"", ""
            sampled = self.sampler.always or self.sampler.root(trace)
        else:
            trace, parent_id, state = parent.trace_id, parent.span_id, parent.trace_state
            ids = trace + self._bits(128).to_bytes(16, "big")
            sampled = self.sampler.child(trace, parent.sampled)
        trace_hex = trace.hex()
        request.log_fields["trace_id"] = trace_hex
        active = [trace, ids[16:24], parent_id, state, sampled, trace_hex, time_ns(), None, ids]
        return _ACTIVE.set(active)

    def finish_request(self, request: Any, token: Token[RequestTrace]) -> None:
        trace, span, parent, state, sampled, _, start, answer, _ = _ACTIVE.get()
        _ACTIVE.reset(token)
        if not sampled:
            return
        fields = request.log_fields
        error = fields.get("error") or fields.get("stream_error")
        method, path, status = request.method, request.path, request.status
        group = self._paths.get((method, path)) or self._path_group(method, path)
        model = fields.get("model") if path == MESSAGES_PATH else None
        served = None if model is None else request.served
        stable: tuple[Any, ...]
        if served is None or model is None:  # not routed: no attempt, no answer
            if model is None:
                name, operation = f"{method} {path}", None
            else:
                name, operation = self._names.get(model) or self._name(model), OPERATION
            stable = (
                SERVER_KIND, name, group, status, operation, None, None, None,
                None, None, None, None, None, None, model, None, None, error, None,
            )  # fmt: skip
            self.queue.add((trace, span, parent, state, start, time_ns(), stable, None, None))
            return
        if answer is None:  # a stream's: its attempt's span ended at its first event
            answer = answer_values(served.value)
        route = served.route
        known = self._routes.get(id(route)) or self._route(route)
        fallback = served.model.name if "fallback_model" in fields else None
        # A model's spans share one name string: the encoder's cache hashes it once.
        name = self._names.get(model) or self._name(model)
        # Kind, name, group, then span_record.STABLE_ATTRIBUTES' values in their order.
        stable = (
            SERVER_KIND, name, group, status, OPERATION, known[1], known[4], served.attempts,
            None, None, None, None, answer[ANSWER_READ], answer[ANSWER_CREATED], model,
            route.model, fallback, error, answer[ANSWER_REASONS],
        )  # fmt: skip
        content = None
        if self.capture_content:
            content = (None, None, _output(served.value))
        self.queue.add((trace, span, parent, state, start, time_ns(), stable, answer, content))

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
        if active[4]:
            ids = active[8]
            if ids is None:
                span = self._bits(64).to_bytes(8, "big")
            else:
                # The first attempt's id was drawn with the request's.
                span, active[8] = ids[24:], None
            headers = {"traceparent": f"00-{active[5]}-{span.hex()}-01"}
            tracing: Tracing | None = self
        else:
            # Sampled out: no span of its own; the request's context goes upstream.
            span, tracing = active[1], None
            headers = {"traceparent": f"00-{active[5]}-{span.hex()}-00"}
        if active[3]:
            headers["tracestate"] = active[3]
        return TracedAttempt(headers, tracing, call, number, active, span)

    def _route(self, route: Route) -> tuple[Route, str, AttributeGroup, str, str]:
        """A route (kept, so that its id is not reused while known), its provider name, its
        attempts' shared attributes, their span name and its label."""
        provider = provider_name(route)
        label = route.label
        url = urlsplit(route.provider.base_url)
        pairs: list[tuple[str, str | int]] = [
            ("gen_ai.operation.name", OPERATION),
            ("gen_ai.provider.name", provider),
            ("gen_ai.request.model", route.model),
            ("messagegate.route", label),
            ("server.address", url.hostname or ""),
        ]
        if url.port is not None:
            pairs.append(("server.port", url.port))
        group = AttributeGroup(tuple(pairs))
        known = (route, provider, group, f"{OPERATION} {route.model}", label)
        if len(self._routes) >= _GROUPS_MAX:
            self._routes.clear()
        # By identity: a route's label is built afresh each time it is read.
        self._routes[id(route)] = known
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
        tracing = self.tracing
        if tracing is None:
            return
        request, call = self.request, self.call
        route = call.route
        known = tracing._routes.get(id(route)) or tracing._route(route)
        if error is not None:
            response_model, error_type, answer = None, error_type_of(error), None
            read = created = reasons = None
        else:
            response_model, error_type = route.model, None
            # A whole answer; a stream's usage and stop reason are known at its end only,
            # and the request's span has them.
            if type(getattr(value, "body", None)) is dict:
                answer = request[_ANSWER] = answer_values(value)  # type: ignore[index]
                read, created = answer[ANSWER_READ], answer[ANSWER_CREATED]
                reasons = answer[ANSWER_REASONS]
            else:
                answer = read = created = reasons = None
        body = call.body
        # The request parameters as validated (numbers or None): the encoder types them.
        stable = (
            CLIENT_KIND, known[3], known[2], None, None, None, None, self.number,
            body.get("max_tokens"), body.get("temperature"), body.get("top_p"), body.get("top_k"),
            read, created, None, response_model, None, error_type, reasons,
        )  # fmt: skip
        content = None
        if tracing.capture_content:
            content = (*_input(body), None if error is not None else _output(value))
        trace, parent, state = request[0], request[1], request[3]  # type: ignore[index]
        tracing.queue.add(
            (trace, self.span, parent, state, self.start, time_ns(), stable, answer, content)
        )


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
