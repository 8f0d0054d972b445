"""An OTLP/HTTP trace receiver on a loopback port that keeps what it was sent."""

from __future__ import annotations

import gzip
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

SERVER_KIND, CLIENT_KIND = 2, 3  # opentelemetry.proto's Span.SpanKind


class Receiver:
    """Runs in a thread: the exporter's calls block, and the gateway may share the test's loop."""

    def __init__(self) -> None:
        self.bodies: list[bytes] = []
        # Every POST's headers, accepted or not.
        self.requests: list[dict[str, str]] = []
        # Answers to give before the usual 200: (status, headers).
        self.refusals: list[tuple[int, dict[str, str]]] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                length = int(self.headers["content-length"])
                body = self.rfile.read(min(length, 64 * 1024 * 1024))
                receiver.requests.append({k.lower(): v for k, v in self.headers.items()})
                status, headers = receiver.refusals.pop(0) if receiver.refusals else (200, {})
                if status == 200:
                    if self.headers.get("content-encoding") == "gzip":
                        body = gzip.decompress(body)
                    receiver.bodies.append(body)
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("content-type", "application/x-protobuf")
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/v1/traces"

    @property
    def environ(self) -> dict[str, str]:
        """The variables that send a gateway's spans here."""
        return {"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": self.endpoint}

    def requests_decoded(self) -> list[Any]:
        out = []
        for body in self.bodies:
            request = ExportTraceServiceRequest()
            request.ParseFromString(body)
            out.append(request)
        return out

    def spans(self) -> list[Any]:
        out = []
        for request in self.requests_decoded():
            for resource in request.resource_spans:
                for scope in resource.scope_spans:
                    out.extend(scope.spans)
        return out


@contextmanager
def running_receiver() -> Iterator[Receiver]:
    receiver = Receiver()
    receiver.thread.start()
    try:
        yield receiver
    finally:
        receiver.server.shutdown()
        receiver.server.server_close()


def attributes(span: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in span.attributes:
        value = item.value
        kind = value.WhichOneof("value")
        if kind == "array_value":
            out[item.key] = [v.string_value for v in value.array_value.values]
        else:
            out[item.key] = getattr(value, kind)
    return out
