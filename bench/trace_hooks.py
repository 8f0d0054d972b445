"""Instructions the tracer's request-path hooks and its protobuf encoder take per request, alone,
under ``valgrind --tool=callgrind`` (the run with N requests less the run with none, over N).

The hooks are `Tracing`'s, called as the server and routing call them for a JSON answer of the
OpenAI route (`start_request`, `attempt`, the attempt's `end`, `finish_request`); the encoder
encodes batches of those requests' two spans. Where `bench.instructions --otel` gives the whole
cost, this says which part it is in.

    python -m bench.trace_hooks [--requests 2000] [--batches 100]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench.instructions import ROOT, gateway_config

_TOTALS = re.compile(r"^(?:summary|totals):\s*(\d+)", re.MULTILINE)
# A batch of spans: 99 requests' (the hooks' queue is emptied past that, as an export would).
_BATCH_REQUESTS = 99
_ANSWER = {
    "id": "msg_0123456789abcdef01234567",
    "type": "message",
    "role": "assistant",
    "content": [{"type": "text", "text": "Hello there!"}],
    "stop_reason": "end_turn",
}


def _workload(part: str, count: int) -> None:
    """`count` requests with the hooks ("hooks") or without ("plain"), or `count` encodings of a
    batch ("encode")."""
    from messagegate.api.usage import Usage
    from messagegate.config import parse_config
    from messagegate.providers.base import Completion, UpstreamCall
    from messagegate.routing.router import Routed
    from messagegate.server.exchange import Exchange
    from messagegate.telemetry.traces import Tracing

    raw = json.loads(gateway_config(1, 2, None, {"otel": {"enabled": True}}))
    environ = {
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://127.0.0.1:9/v1/traces",
        "OTEL_TRACES_SAMPLER": "always_on",
    }
    config = parse_config(raw, source="bench", environ=environ)
    model = config.models["bench-openai"]
    route = model.routes[0]
    tracing = Tracing(config.otel)
    headers = [(b"host", b"127.0.0.1"), (b"content-type", b"application/json")]
    scope: dict[str, Any] = {"method": "POST", "path": "/v1/messages", "headers": headers}
    body = {"model": "bench-openai", "max_tokens": 64, "messages": []}

    def request(traced: bool) -> None:
        exchange = Exchange(scope, _never, _never)
        token = tracing.start_request(exchange) if traced else None
        call = UpstreamCall(route, body, "bench-openai", dict(exchange.headers))
        span = tracing.attempt(call, 1) if traced else None
        value = Completion(_ANSWER, {}, Usage(20, 5))
        if span is not None:
            span.end(None, value)
        exchange.log_fields["model"] = "bench-openai"
        exchange.status = 200
        exchange.served = Routed(value, model, route, 1, [], 0.0)
        if token is not None:
            tracing.finish_request(exchange, token)
        if len(tracing.queue.records) > 2 * _BATCH_REQUESTS:
            tracing.queue.records.clear()

    if part != "encode":
        for _ in range(count):
            request(part == "hooks")
        return
    for _ in range(_BATCH_REQUESTS):
        request(True)
    batch = tracing.queue.take()
    for _ in range(count):
        tracing.exporter.encoder.encode(batch)


async def _never(*_: Any) -> Any:
    raise AssertionError("the hooks neither read nor send")


def _instructions(part: str, count: int, work: Path) -> int:
    out = work / f"callgrind-{part}-{count}.out"
    command = [
        "valgrind",
        "--tool=callgrind",
        f"--callgrind-out-file={out}",
        sys.executable,
        "-m",
        "bench.trace_hooks",
        "--run",
        part,
        str(count),
    ]
    environment = dict(os.environ, PYTHONPATH=f"{ROOT / 'src'}:{ROOT}")
    subprocess.run(command, env=environment, check=True, capture_output=True, timeout=1800)
    found = _TOTALS.search(out.read_text())
    if found is None:
        raise RuntimeError(f"no totals in {out}")
    return int(found.group(1))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.trace_hooks", description=__doc__)
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--batches", type=int, default=100)
    parser.add_argument("--run", nargs=2, metavar=("PART", "COUNT"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.run is not None:
        part, count = args.run
        _workload(part, int(count))
        return 0
    with tempfile.TemporaryDirectory(prefix="mg-hooks-") as tmp:
        work = Path(tmp)
        # The same requests made without the hooks: what is not theirs.
        hooks = _instructions("hooks", args.requests, work) - _instructions(
            "plain", args.requests, work
        )
        encode = _instructions("encode", args.batches, work) - _instructions("encode", 0, work)
    per_request = hooks / args.requests
    per_batch_request = encode / (args.batches * _BATCH_REQUESTS)
    print(f"hooks   {per_request:>10,.0f} instructions/request")
    print(f"encode  {per_batch_request:>10,.0f} instructions/request (two spans)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
