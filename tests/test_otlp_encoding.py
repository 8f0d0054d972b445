"""The hand-written OTLP encoders against opentelemetry-proto's own decoding and JSON mapping."""

from __future__ import annotations

import base64
import random
from typing import Any

import orjson
from google.protobuf.internal.encoder import _VarintBytes
from google.protobuf.json_format import MessageToDict
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from fakes import otlp
from messagegate.telemetry.otlp_json import JsonEncoder
from messagegate.telemetry.otlp_protobuf import ProtobufEncoder, varint
from messagegate.telemetry.span_record import (
    ERROR_TYPE,
    SPAN_END,
    SPAN_START,
    STABLE,
    AttributeGroup,
    RequestRecord,
    RouteSpans,
    attributes,
    spans,
    stable,
)

RESOURCE = (("service.name", "gateway-7"), ("deployment.environment", "prod ü"))
ROUTE = RouteSpans(
    object(),
    "anthropic",
    "route/one",
    "m",
    AttributeGroup(
        (("gen_ai.operation.name", "chat"), ("server.port", 443), ("flag", True), ("ratio", 0.25))
    ),
)
OTHER_ROUTE = RouteSpans(
    object(), "openai", "r2", "gpt-ü", AttributeGroup((("gen_ai.provider.name", "openai"),))
)
PATH = AttributeGroup((("http.request.method", "GET"), ("url.path", "/v1/models")))
MESSAGES = AttributeGroup((("http.request.method", "POST"), ("url.path", "/v1/messages")))
MAX_TOKENS, TEMPERATURE = 2, 3  # in an attempt's key


def _answer(rng: random.Random, n: int) -> tuple[Any, ...]:
    return (
        rng.choice([None, 3, 200, 20_000, 3_000_000]),
        n * 37,
        rng.choice([None, 0, 129, 70_000]),
        n * 1000,
        f"msg_{rng.getrandbits(64):x}" + ("y" * 120 if n == 2 else ""),
        "end_turn",
    )


def records(count: int) -> list[RequestRecord]:
    """Requests of every shape the tracer records: routed (whole answers, whose attempt shares
    the request's answer, and streams), failed over, failed, not routed."""
    rng = random.Random(5)
    out = []
    for n in range(count):
        start = 1_700_000_000_000_000_000 + n * 1_000_000
        ids = rng.randbytes(32).hex()
        attempts = []
        answer = None
        for number in range(1, 1 + n % 3):
            last = number == n % 3
            failed = not last or n % 4 == 0
            attempt_answer = None if failed or n % 6 == 4 else _answer(rng, n)
            if attempt_answer is not None:
                answer = attempt_answer
            key = (
                ROUTE if number % 2 else OTHER_ROUTE,
                number,
                rng.choice([1, 127, 128, 300, 1 << 31, "64", None]),
                rng.choice([0.7, 1, True, None]),
                None,
                -1 - n,
                "503" if failed else None,
                None if attempt_answer is None else attempt_answer[5],
            )
            content = None
            if n == 9:
                content = ("é" * 70_000, None, '[{"type":"text"}]')
            span = None if number == 1 else rng.randbytes(8).hex()
            attempts.append(
                (span, start + number, start + number * 10, key, attempt_answer, content)
            )
        if n % 4 == 0 and n % 3:
            server: tuple[Any, ...] = (PATH if n % 8 == 0 else MESSAGES, None, 503, "overloaded")
        elif n % 3 == 0:
            server = (PATH, None if n % 2 else "claude-x", 200, None)
        else:
            if answer is None:  # a stream's, read at its end
                answer = _answer(rng, n)
            fallback = "spare" if n % 5 == 1 else None
            server = (ROUTE, f"claude-ü-{n % 4}" + "x" * (200 if n == 7 else 0), 200, n % 3,
                      fallback, None, answer[5])  # fmt: skip
        out.append(
            [
                ids,
                rng.randbytes(8).hex() if n % 3 else "",
                "vendor=a1,other=ü" if n % 5 == 0 else "",
                True,
                start,
                start + rng.randrange(1 << 40),
                server,
                answer if len(server) == 7 else None,
                attempts or None,
                '[{"type":"text","text":"ü"}]' if n == 11 else None,
                None,
                0,
                None,
                ids[:32],
            ]
        )
    return out


def decoded(body: bytes) -> ExportTraceServiceRequest:
    request = ExportTraceServiceRequest()
    request.ParseFromString(body)
    return request


def test_protobuf_bytes_decode_to_every_span_field_and_attribute() -> None:
    requests = records(40)
    request = decoded(ProtobufEncoder(RESOURCE, "1.2.3").encode(requests))
    (resource_spans,) = request.resource_spans
    assert otlp.attributes(resource_spans.resource) == dict(RESOURCE)
    (scope_spans,) = resource_spans.scope_spans
    assert (scope_spans.scope.name, scope_spans.scope.version) == ("messagegate", "1.2.3")
    expected = [span for record in requests for span in spans(record)]
    assert len(expected) > len(requests)
    assert len(scope_spans.spans) == len(expected)
    for record, span in zip(expected, scope_spans.spans, strict=True):
        trace, span_id, parent, state = record[:4]
        values = record[STABLE]
        assert (span.trace_id, span.span_id, span.parent_span_id) == (trace, span_id, parent)
        assert span.trace_state == state
        assert (span.kind, span.name) == values[:2]
        assert (span.start_time_unix_nano, span.end_time_unix_nano) == (
            record[SPAN_START],
            record[SPAN_END],
        )
        assert span.status.code == (2 if values[ERROR_TYPE] else 0)
        listed = [(kv.key, _value(kv.value)) for kv in span.attributes]
        assert listed == attributes(record)


def test_a_requests_spans_are_its_own_then_its_attempts_under_it() -> None:
    # Routed, answered by its second attempt.
    record = records(3)[2]
    assert len(record[8]) == 2
    assert record[6][0] is ROUTE
    server, first, second = spans(record)
    ids = bytes.fromhex(record[0])
    assert (server[0], server[1], server[2]) == (ids[:16], ids[16:24], bytes.fromhex(record[1]))
    # The first attempt's id was drawn with the request's; a later one's is its own.
    assert (first[0], first[1], first[2]) == (ids[:16], ids[24:], ids[16:24])
    assert (second[1], second[2]) == (bytes.fromhex(record[8][1][0]), ids[16:24])
    attempt = dict(attributes(first))
    assert attempt["messagegate.attempt"] == 1
    assert attempt["error.type"] == "503"
    assert "gen_ai.response.model" not in attempt
    answered = dict(attributes(second))
    assert answered["gen_ai.response.model"] == "gpt-ü"
    assert (
        answered["gen_ai.usage.output_tokens"]
        == dict(attributes(server))["gen_ai.usage.output_tokens"]
    )


def test_request_parameters_are_typed_as_otlp_has_them() -> None:
    key = (ROUTE, 1, "64", 1, None, None, None, None)
    seen = dict(stable_attributes_of(key))
    assert "gen_ai.request.max_tokens" not in seen
    assert seen["gen_ai.request.temperature"] == 1.0
    assert type(seen["gen_ai.request.temperature"]) is float


def test_a_parameter_no_schema_checked_is_left_out_not_a_lost_batch() -> None:
    requests = records(4)
    attempts = requests[1][8]
    span, start, end, key, answer, content = attempts[0]
    weird = (*key[:MAX_TOKENS], [64], {"t": 1}, *key[TEMPERATURE + 1 :])
    attempts[0] = (span, start, end, weird, answer, content)
    encoder = ProtobufEncoder(RESOURCE, "1")
    for _ in range(2):
        (resource_spans,) = decoded(encoder.encode(requests)).resource_spans
        found = [
            otlp.attributes(s)
            for s in resource_spans.scope_spans[0].spans
            if s.span_id == bytes.fromhex(requests[1][0])[24:]
        ]
        assert len(found) == 1
        assert "gen_ai.request.max_tokens" not in found[0]
        assert "gen_ai.request.temperature" not in found[0]


def test_a_second_batch_reusing_kept_fragments_encodes_the_same() -> None:
    encoder = ProtobufEncoder(RESOURCE, "1")
    requests = records(12)
    first = encoder.encode(requests)
    assert encoder.encode(requests) == first
    assert ProtobufEncoder(RESOURCE, "1").encode(requests) == first


def test_json_is_protobufs_json_mapping_with_hex_ids() -> None:
    requests = records(20)
    expected = MessageToDict(
        decoded(ProtobufEncoder(RESOURCE, "9").encode(requests)), use_integers_for_enums=True
    )
    for resource_spans in expected["resourceSpans"]:
        for scope_spans in resource_spans["scopeSpans"]:
            for span in scope_spans["spans"]:
                for name in ("traceId", "spanId", "parentSpanId"):
                    if name in span:
                        span[name] = base64.b64decode(span[name]).hex()
    assert orjson.loads(JsonEncoder(RESOURCE, "9").encode(requests)) == expected


def _value(value: Any) -> Any:
    kind = value.WhichOneof("value")
    if kind == "array_value":
        return tuple(_value(item) for item in value.array_value.values)
    return getattr(value, kind)


def stable_attributes_of(key: tuple[Any, ...]) -> list[tuple[str, Any]]:
    return attributes((b"", b"", b"", "", 0, 0, stable(key), None, None))


def test_varints_are_protobufs_at_every_length_boundary() -> None:
    numbers = [0, 1, 0x7F, 0x80, 0x3FFF, 0x4000, 0x1FFFFF, 0x200000, 1 << 35, (1 << 64) - 1]
    for n in numbers:
        assert varint(n) == _VarintBytes(n), n


def test_token_counts_decode_at_every_varint_length_boundary() -> None:
    numbers = [0, 0x7F, 0x80, 0x3FFF, 0x4000, 0x1FFFFF, 0x200000, 1 << 35]
    requests = records(3)
    for n in numbers:
        answer = (n, n + 1, None if n else 0, n, "msg_1", "end_turn")
        requests[1][7] = answer
        (resource_spans,) = decoded(ProtobufEncoder(RESOURCE, "1").encode(requests)).resource_spans
        server = otlp.attributes(resource_spans.scope_spans[0].spans[1 + len(requests[0][8] or ())])
        assert server["gen_ai.usage.input_tokens"] == n
        assert server["gen_ai.usage.output_tokens"] == answer[1]
        assert server.get("gen_ai.usage.cache_read.input_tokens") == answer[2]
        assert server["gen_ai.usage.cache_creation.input_tokens"] == n
