"""OpenTelemetry traces in the GenAI conventions: one SERVER span per request, one CLIENT span
per upstream attempt, the client's W3C ``traceparent`` continued and sent upstream.

The request path only records: ids drawn ahead from the OS, wall-clock nanoseconds, and one
list per request (`span_record`) holding its spans' keys and answer, queued once for
`otlp_export`, which encodes and sends them between requests. No OpenTelemetry SDK: its ~20 us
a span was 3.3x a request's instructions. Every attribute is a typed value picked here (never a
header or a key); prompt and answer text become attributes only with
``otel: {capture_content: true}``.
"""

from __future__ import annotations

import os
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
    ANSWER,
    ANSWER_REASON,
    ATTEMPT_SPAN,
    ATTEMPT_START,
    ATTEMPTS,
    END,
    IDS,
    OUTPUT,
    ROUTE_SPANS,
    SAMPLED,
    SERVER,
    STATE,
    TRACE_HEX,
    AttributeGroup,
    RequestRecord,
    RouteSpans,
    answer_values,
)
from messagegate.telemetry.trace_context import Sampler, parse_traceparent

_GROUPS_MAX = 4096
# Ids are drawn from the OS's generator this many hex digits at a time: 128 requests' (a
# request's trace id, its span id and its first attempt's are 64 digits).
_DRAWN_DIGITS = 64 * 128
_ACTIVE: ContextVar[RequestRecord] = ContextVar("messagegate_request_trace")


class Tracing:
    """The gateway's tracer: `start_request`/`finish_request` around each request, `attempt`
    and `attempt_ended` around each upstream attempt (routing's `AttemptTracer`)."""

    def __init__(self, settings: OtelSettings, dropped: Dropped | None = None) -> None:
        otlp = settings.otlp
        self.capture_content = settings.capture_content
        self.sampler = Sampler(otlp.sampler, otlp.ratio)
        self.queue = SpanQueue(otlp.max_queue_size, otlp.max_export_batch_size, dropped or _ignore)
        encoder = JsonEncoder if otlp.protocol == "http/json" else ProtobufEncoder
        self.exporter = OtlpExporter(otlp, self.queue, encoder(otlp.resource, __version__))
        # Drawn when first needed: in the process that serves, not one it was forked from.
        self._drawn = ""
        self._drawn_at = _DRAWN_DIGITS
        self._paths: dict[tuple[str, str], AttributeGroup] = {}
        self._routes: dict[int, RouteSpans] = {}

    def start(self) -> None:
        """Begin exporting (on the running loop)."""
        self.exporter.start()

    async def close(self) -> None:
        """Export what is left, for at most the export timeout."""
        await self.exporter.close()

    def _draw(self) -> str:
        """64 random hex digits."""
        at = self._drawn_at
        if at == _DRAWN_DIGITS:
            self._drawn, at = os.urandom(_DRAWN_DIGITS // 2).hex(), 0
        self._drawn_at = at + 64
        return self._drawn[at : at + 64]

    # -- the SERVER span ---------------------------------------------------------------------

    def start_request(self, request: Any) -> Token[RequestRecord]:
        """A request arrived: its record is current (for its attempts) until `finish_request`."""
        at = self._drawn_at  # `_draw`, inline: a call costs as much as the rest of it
        if at == _DRAWN_DIGITS:
            self._drawn, at = os.urandom(_DRAWN_DIGITS // 2).hex(), 0
        self._drawn_at = at + 64
        ids = self._drawn[at : at + 64]
        header = request.headers.get("traceparent")
        parent = None if header is None else parse_traceparent(header, request.headers)
        if parent is None:
            parent_id = state = ""
            sampled = self.sampler.always or self.sampler.root(ids)
        else:
            ids = parent.trace_id + ids[32:]
            parent_id, state = parent.span_id, parent.trace_state
            sampled = self.sampler.child(parent.trace_id, parent.sampled)
        request.log_fields["trace_id"] = trace = ids[:32]
        # span_record's layout: IDS, PARENT, STATE, SAMPLED, START, END, SERVER, ANSWER,
        # ATTEMPTS, OUTPUT, ATTEMPT_SPAN, ATTEMPT_START, ROUTE_SPANS, TRACE_HEX.
        record = [
            ids, parent_id, state, sampled, time_ns(), 0, None, None, None, None, None, 0, None,
            trace,
        ]  # fmt: skip
        return _ACTIVE.set(record)

    def finish_request(self, request: Any, token: Token[RequestRecord]) -> None:
        record = _ACTIVE.get()
        _ACTIVE.reset(token)
        if not record[SAMPLED]:
            return
        fields = request.log_fields
        error = fields.get("error") or fields.get("stream_error")
        path = request.path
        model = fields.get("model") if path == MESSAGES_PATH else None
        served = None if model is None else request.served
        if served is None:  # not routed: no answer of its own
            method = request.method
            group = self._paths.get((method, path)) or self._path_group(method, path)
            record[SERVER] = (group, model, request.status, error)
            record[ANSWER] = None
        else:
            answer = record[ANSWER]
            if answer is None:  # a stream's: its attempt's span ended at its first event
                value = served.value
                answer = record[ANSWER] = answer_values(value, getattr(value, "body", None))
            route = served.route
            known = record[ROUTE_SPANS]  # its last attempt's, found by `attempt_ended`
            if known is None or known.route is not route:
                known = self._routes.get(id(route)) or self._route(route)
            fallback = served.model.name if "fallback_model" in fields else None
            record[SERVER] = (
                known, model, request.status, served.attempts, fallback, error,
                answer[ANSWER_REASON],
            )  # fmt: skip
            if self.capture_content:
                record[OUTPUT] = _output(served.value)
        record[END] = time_ns()
        attempts = record[ATTEMPTS]
        self.queue.add(record, 1 if attempts is None else 1 + len(attempts))

    def _path_group(self, method: str, path: str) -> AttributeGroup:
        group = AttributeGroup((("http.request.method", method), ("url.path", path)))
        if len(self._paths) >= _GROUPS_MAX:
            self._paths.clear()  # paths come from clients: a bounded memory of them
        self._paths[method, path] = group
        return group

    # -- the CLIENT spans -------------------------------------------------------------------

    def attempt(self, call: Any, number: int) -> dict[str, str] | None:
        """An upstream attempt starts: the trace headers it sends upstream (None: no trace)."""
        record = _ACTIVE.get(None)
        if record is None:
            return None
        ids, trace = record[IDS], record[TRACE_HEX]
        if not record[SAMPLED]:
            # No span of its own: the request's context goes upstream.
            headers = {"traceparent": f"00-{trace}-{ids[32:48]}-00"}
        elif record[ATTEMPT_START] == 0:
            # The request's first: its id was drawn with the request's (ATTEMPT_SPAN is None).
            headers = {"traceparent": f"00-{trace}-{ids[48:]}-01"}
        else:
            span = record[ATTEMPT_SPAN] = self._draw()[:16]
            headers = {"traceparent": f"00-{trace}-{span}-01"}
        record[ATTEMPT_START] = time_ns()
        if record[STATE]:
            headers["tracestate"] = record[STATE]
        return headers

    def attempt_ended(
        self, call: Any, number: int, error: GatewayError | None, value: object = None
    ) -> None:
        """The attempt `attempt` started ended: `value` its answer, or `error`."""
        record = _ACTIVE.get(None)
        if record is None or not record[SAMPLED]:
            return
        route = call.route
        known = record[ROUTE_SPANS] = self._routes.get(id(route)) or self._route(route)
        answer = reason = error_type = None
        if error is not None:
            error_type = error_type_of(error)
        else:
            whole = getattr(value, "body", None)
            if type(whole) is dict:
                # A whole answer; a stream's usage and stop reason are known at its end only,
                # and the request's span has them.
                answer = record[ANSWER] = answer_values(value, whole)
                reason = answer[ANSWER_REASON]
        body = call.body
        # The request parameters as validated (numbers or None): the encoder types them.
        key = (
            known, number, body.get("max_tokens"), body.get("temperature"), body.get("top_p"),
            body.get("top_k"), error_type, reason,
        )  # fmt: skip
        content = None
        if self.capture_content:
            content = (*_input(body), None if error is not None else _output(value))
        attempt = (record[ATTEMPT_SPAN], record[ATTEMPT_START], time_ns(), key, answer, content)
        attempts = record[ATTEMPTS]
        if attempts is None:
            record[ATTEMPTS] = [attempt]
        else:
            attempts.append(attempt)

    def _route(self, route: Route) -> RouteSpans:
        """What a route's spans share, remembered by the route's identity (a route's label is
        built afresh each time it is read)."""
        url = urlsplit(route.provider.base_url)
        provider = provider_name(route)
        pairs: list[tuple[str, str | int]] = [
            ("gen_ai.operation.name", OPERATION),
            ("gen_ai.provider.name", provider),
            ("gen_ai.request.model", route.model),
            ("messagegate.route", route.label),
            ("server.address", url.hostname or ""),
        ]
        if url.port is not None:
            pairs.append(("server.port", url.port))
        known = RouteSpans(route, provider, route.label, route.model, AttributeGroup(tuple(pairs)))
        if len(self._routes) >= _GROUPS_MAX:
            self._routes.clear()
        self._routes[id(route)] = known
        return known


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
