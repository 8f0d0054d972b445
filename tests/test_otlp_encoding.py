"""The hand-written OTLP encoders against opentelemetry-proto's own decoding and JSON mapping."""

from __future__ import annotations

import base64
import random
from typing import Any

import orjson
from google.protobuf.json_format import MessageToDict
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from fakes import otlp
from messagegate.telemetry.otlp_json import JsonEncoder
from messagegate.telemetry.otlp_protobuf import ProtobufEncoder
from messagegate.telemetry.span_record import (
    CLIENT_KIND,
    ERROR_TYPE,
    SERVER_KIND,
    STABLE,
    STABLE_ATTRIBUTES,
    AttributeGroup,
    SpanRecord,
    attributes,
)

RESOURCE = (("service.name", "gateway-7"), ("deployment.environment", "prod ü"))
ROUTE = AttributeGroup(
    (("gen_ai.operation.name", "chat"), ("server.port", 443), ("flag", True), ("ratio", 0.25))
)
MAX_TOKENS = 3 + STABLE_ATTRIBUTES.index("gen_ai.request.max_tokens")
TEMPERATURE = 3 + STABLE_ATTRIBUTES.index("gen_ai.request.temperature")
PATH = AttributeGroup((("http.request.method", "POST"), ("url.path", "/v1/messages")))


def records(count: int) -> list[SpanRecord]:
    rng = random.Random(5)
    out = []
    answer: tuple[Any, ...] | None = None
    for n in range(count):
        server = n % 2 == 1
        start = 1_700_000_000_000_000_000 + n
        stable = (
            SERVER_KIND if server else CLIENT_KIND,
            f"chat model-{n % 4}" + "x" * (200 if n == 7 else 0),
            PATH if server else ROUTE,
            200 if server else None,
            "chat",
            "anthropic",
            "route/one",
            1 + n % 3,
            rng.choice([1, 127, 128, 300, 1 << 31, "64", None]),
            rng.choice([0.7, 1, True, None]),
            None,
            -1 - n,
            0,
            n * 1000,
            "claude-ü" if server else "m",
            None if n % 4 == 0 else "m",
            None,
            "503" if n % 4 == 0 else None,
            None if n % 4 == 0 else ("end_turn",),
        )
        content = None
        if n == 9:
            content = ("é" * 70_000, None, '[{"type":"text"}]')
        # An attempt's span and its request's share their answer, as the tracer queues them.
        if not server:
            answer = None
            if n % 6 != 4:
                answer = (
                    rng.choice([None, 3, 200, 20_000, 3_000_000]),
                    n * 37,
                    0,
                    n * 1000,
                    f"msg_{rng.getrandbits(64):x}" + ("y" * 120 if n == 2 else ""),
                    ("end_turn",),
                )
        out.append(
            (
                rng.randbytes(16),
                rng.randbytes(8),
                rng.randbytes(8) if n % 3 else b"",
                "vendor=a1,other=ü" if n % 5 == 0 else "",
                start,
                start + rng.randrange(1 << 40),
                stable,
                answer,
                content,
            )
        )
    return out


def decoded(body: bytes) -> ExportTraceServiceRequest:
    request = ExportTraceServiceRequest()
    request.ParseFromString(body)
    return request


def test_protobuf_bytes_decode_to_every_span_field_and_attribute() -> None:
    spans = records(40)
    request = decoded(ProtobufEncoder(RESOURCE, "1.2.3").encode(spans))
    (resource_spans,) = request.resource_spans
    assert otlp.attributes(resource_spans.resource) == dict(RESOURCE)
    (scope_spans,) = resource_spans.scope_spans
    assert (scope_spans.scope.name, scope_spans.scope.version) == ("messagegate", "1.2.3")
    assert len(scope_spans.spans) == len(spans)
    for record, span in zip(spans, scope_spans.spans, strict=True):
        trace, span_id, parent, state, start, end, stable = record[: STABLE + 1]
        assert (span.trace_id, span.span_id, span.parent_span_id) == (trace, span_id, parent)
        assert span.trace_state == state
        assert (span.kind, span.name) == stable[:2]
        assert (span.start_time_unix_nano, span.end_time_unix_nano) == (start, end)
        assert span.status.code == (2 if stable[ERROR_TYPE] else 0)
        listed = [(kv.key, _value(kv.value)) for kv in span.attributes]
        assert listed == attributes(record)


def test_request_parameters_are_typed_as_otlp_has_them() -> None:
    (record,) = records(1)
    stable = list(record[STABLE])
    stable[MAX_TOKENS], stable[TEMPERATURE] = "64", 1
    seen = dict(attributes((*record[:STABLE], tuple(stable), *record[STABLE + 1 :])))
    assert "gen_ai.request.max_tokens" not in seen
    assert seen["gen_ai.request.temperature"] == 1.0
    assert type(seen["gen_ai.request.temperature"]) is float


def test_a_parameter_no_schema_checked_is_left_out_not_a_lost_batch() -> None:
    spans = records(4)
    stable = list(spans[0][STABLE])
    stable[MAX_TOKENS], stable[TEMPERATURE] = [64], {"t": 1}
    spans[0] = (*spans[0][:STABLE], tuple(stable), *spans[0][STABLE + 1 :])
    encoder = ProtobufEncoder(RESOURCE, "1")
    for _ in range(2):
        (resource_spans,) = decoded(encoder.encode(spans)).resource_spans
        first = otlp.attributes(resource_spans.scope_spans[0].spans[0])
        assert "gen_ai.request.max_tokens" not in first
        assert "gen_ai.request.temperature" not in first


def test_a_second_batch_reusing_kept_fragments_encodes_the_same() -> None:
    encoder = ProtobufEncoder(RESOURCE, "1")
    spans = records(12)
    first = encoder.encode(spans)
    assert encoder.encode(spans) == first
    assert ProtobufEncoder(RESOURCE, "1").encode(spans) == first


def test_json_is_protobufs_json_mapping_with_hex_ids() -> None:
    spans = records(20)
    expected = MessageToDict(
        decoded(ProtobufEncoder(RESOURCE, "9").encode(spans)), use_integers_for_enums=True
    )
    for resource_spans in expected["resourceSpans"]:
        for scope_spans in resource_spans["scopeSpans"]:
            for span in scope_spans["spans"]:
                for name in ("traceId", "spanId", "parentSpanId"):
                    if name in span:
                        span[name] = base64.b64decode(span[name]).hex()
    assert orjson.loads(JsonEncoder(RESOURCE, "9").encode(spans)) == expected


def _value(value: Any) -> Any:
    kind = value.WhichOneof("value")
    if kind == "array_value":
        return tuple(_value(item) for item in value.array_value.values)
    return getattr(value, kind)
