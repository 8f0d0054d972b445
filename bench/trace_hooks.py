"""Instructions the tracer's request-path hooks and its protobuf encoder take per request, alone,
under ``valgrind --tool=callgrind`` (the run with N requests less the run with none, over N).

The hooks are `Tracing`'s, called as the server and routing call them for a JSON answer of the
OpenAI route (`start_request`, `attempt`, `attempt_ended`, `finish_request`); the encoder
encodes batches of those requests' two spans; "both" is the hooks with each batch of 99
requests encoded as it fills (fresh records, as a gateway encodes them). Where
`bench.instructions --otel` gives the whole cost, this says which part it is in.

`--usage fixed` answers every request with the same usage (as the bench's fake upstream does);
`--usage claude-code` with what Claude Code's turns get: cache reads and writes that differ from
one request to the next.

    python -m bench.trace_hooks [--requests 2000] [--batches 100] [--usage fixed|claude-code]
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


def _workload(part: str, count: int, varied: bool) -> None:
    """`count` requests with the hooks ("hooks"), without ("plain"), or with the hooks and their
    batches encoded ("both"), or `count` encodings of a batch ("encode")."""
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

    served = iter(range(1 << 62))

    def usage() -> Usage:
        if not varied:
            return Usage(20, 5)
        n = next(served)
        return Usage(20 + n % 500, 5 + n % 300, 30_000 + 17 * n, n % 2000)

    def request(traced: bool) -> None:
        exchange = Exchange(scope, _never, _never)
        token = tracing.start_request(exchange) if traced else None
        sent = dict(exchange.headers)
        call = UpstreamCall(route, body, "bench-openai", sent)
        if traced:
            trace = tracing.attempt(call, 1)
            if trace is not None:
                sent.update(trace)
        value = Completion(_ANSWER, {}, usage())
        if traced:
            tracing.attempt_ended(call, 1, None, value)
        exchange.log_fields["model"] = "bench-openai"
        exchange.status = 200
        exchange.served = Routed(value, model, route, 1, [], 0.0)
        if token is not None:
            tracing.finish_request(exchange, token)
        if part != "encode" and len(tracing.queue.records) >= _BATCH_REQUESTS:
            batch, _ = tracing.queue.take()
            if part == "both":
                tracing.exporter.encoder.encode(batch)

    if part != "encode":
        for _ in range(count):
            request(part != "plain")
        return
    for _ in range(_BATCH_REQUESTS):
        request(True)
    batch, _ = tracing.queue.take()
    for _ in range(count):
        tracing.exporter.encoder.encode(batch)


async def _never(*_: Any) -> Any:
    raise AssertionError("the hooks neither read nor send")


def _instructions(part: str, count: int, work: Path, usage: str) -> int:
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
        usage,
    ]
    # A fixed hash seed: the same dict layouts in every run.
    environment = dict(os.environ, PYTHONPATH=f"{ROOT / 'src'}:{ROOT}", PYTHONHASHSEED="0")
    subprocess.run(command, env=environment, check=True, capture_output=True, timeout=1800)
    found = _TOTALS.search(out.read_text())
    if found is None:
        raise RuntimeError(f"no totals in {out}")
    return int(found.group(1))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.trace_hooks", description=__doc__)
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--batches", type=int, default=100)
    parser.add_argument("--usage", choices=["fixed", "claude-code"], default="fixed")
    parser.add_argument(
        "--run", nargs=3, metavar=("PART", "COUNT", "USAGE"), help=argparse.SUPPRESS
    )
    args = parser.parse_args(argv)
    if args.run is not None:
        part, count, usage = args.run
        _workload(part, int(count), usage == "claude-code")
        return 0
    # Whole batches: the requests' spans are all encoded.
    requests = args.requests - args.requests % _BATCH_REQUESTS
    with tempfile.TemporaryDirectory(prefix="mg-hooks-") as tmp:
        work = Path(tmp)

        def count(part: str, times: int) -> int:
            return _instructions(part, times, work, args.usage)

        # The same requests made without the hooks: what is not theirs.
        plain = count("plain", requests)
        hooks = count("hooks", requests) - plain
        both = count("both", requests) - plain
        encode = count("encode", args.batches) - count("encode", 0)
    print(f"hooks   {hooks / requests:>10,.0f} instructions/request")
    per_encoded = encode / (args.batches * _BATCH_REQUESTS)
    print(f"encode  {per_encoded:>10,.0f} instructions/request (two spans)")
    print(f"both    {both / requests:>10,.0f} instructions/request (fresh batches encoded)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
