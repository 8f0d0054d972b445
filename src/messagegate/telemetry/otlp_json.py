"""Request records as an OTLP ``ExportTraceServiceRequest`` in its JSON form (``http/json``).

OTLP's JSON is protobuf's JSON mapping with two exceptions: ids are hex, not base64, and
enums are numbers. 64-bit integers are strings, as that mapping writes them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import orjson

from messagegate.telemetry.otlp_protobuf import SCOPE_NAME
from messagegate.telemetry.span_record import (
    ERROR_TYPE,
    PARENT_ID,
    SPAN_END,
    SPAN_ID,
    SPAN_START,
    STABLE,
    TRACE_ID,
    TRACE_STATE,
    AttributeValue,
    RequestRecord,
    SpanRecord,
    attributes,
    spans,
)

_ERROR_STATUS = {"code": 2}


def json_value(value: AttributeValue) -> dict[str, Any]:
    if isinstance(value, str):
        return {"stringValue": value}
    if isinstance(value, bool):
        return {"boolValue": value}
    if isinstance(value, int):
        return {"intValue": str(value)}
    if isinstance(value, float):
        return {"doubleValue": value}
    return {"arrayValue": {"values": [json_value(item) for item in value]}}


def _key_values(pairs: Sequence[tuple[str, AttributeValue]]) -> list[dict[str, Any]]:
    return [{"key": key, "value": json_value(value)} for key, value in pairs]


class JsonEncoder:
    content_type = "application/json"

    def __init__(self, resource: Sequence[tuple[str, str]], version: str) -> None:
        self._resource = {"attributes": _key_values(resource)}
        self._scope = {"name": SCOPE_NAME, "version": version}

    def encode(self, records: Sequence[RequestRecord]) -> bytes:
        encoded = [_span(span) for record in records for span in spans(record)]
        scope_spans = {"scope": self._scope, "spans": encoded}
        request = {"resourceSpans": [{"resource": self._resource, "scopeSpans": [scope_spans]}]}
        return orjson.dumps(request)


def _span(record: SpanRecord) -> dict[str, Any]:
    stable = record[STABLE]
    span: dict[str, Any] = {
        "traceId": record[TRACE_ID].hex(),
        "spanId": record[SPAN_ID].hex(),
        "name": stable[1],
        "kind": stable[0],
        "startTimeUnixNano": str(record[SPAN_START]),
        "endTimeUnixNano": str(record[SPAN_END]),
        "attributes": _key_values(attributes(record)),
    }
    if record[PARENT_ID]:
        span["parentSpanId"] = record[PARENT_ID].hex()
    if record[TRACE_STATE]:
        span["traceState"] = record[TRACE_STATE]
    if stable[ERROR_TYPE] is not None:
        span["status"] = _ERROR_STATUS
    return span
