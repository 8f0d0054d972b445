"""What traces at 100% sampling cost the gateway's zero-latency throughput, tracing off and on
alternately in one run (off, on, off, on, ...), against a loopback OTLP sink.

The gateway runs on CPU 0, the fake upstream, the sink and the load on CPU 1 (as `bench.run`
pins them). Each round reports requests per second and the gateway's CPU time per request
(user + system, all its threads: the exporter's included); the CPU time is the steadier of the
two when other work shares the machine.

    python -m bench.trace_cost [--rounds 3] [--duration 5] [--concurrency 64]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

import uvloop

from bench import procs
from bench.body import anthropic_body, encode
from bench.client import JSON_ANSWER, run_load
from bench.client import encode_request as encoded
from bench.instructions import GATEWAY_KEY, ROOT, SCENARIOS, free_port, gateway_config

_GATEWAY_CPU, _OTHERS_CPU = "0", "1"


def round_trip(
    work: Path, otel: bool, scenario: str, concurrency: int, duration: float, warmup: float
) -> tuple[float, float]:
    """(requests per second, gateway CPU milliseconds per request) of one gateway run."""
    upstream_port, gateway_port, sink_port = free_port(), free_port(), free_port()
    extra: dict[str, object] = {"otel": {"enabled": True}} if otel else {}
    config = work / f"gateway-{otel}.json"
    config.write_text(gateway_config(upstream_port, gateway_port, None, extra))
    environment = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT / "src")}
    if otel:
        environment |= {
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": f"http://127.0.0.1:{sink_port}/v1/traces",
            "OTEL_TRACES_SAMPLER": "always_on",
        }
    python = sys.executable
    upstream = procs.start(
        "upstream", [python, "-m", "bench.fake_upstream", "--port", str(upstream_port)], work,
        cpus=_OTHERS_CPU, cwd=ROOT,
    )  # fmt: skip
    sink = procs.start(
        "sink", [python, "-m", "bench.otlp_sink", "--port", str(sink_port)], work,
        cpus=_OTHERS_CPU, cwd=ROOT,
    )  # fmt: skip
    serve = ["messagegate.cli", "serve", "--config", str(config), "--log-level", "warning"]
    gateway = procs.start(
        "gateway", [python, "-m", *serve], work, cpus=_GATEWAY_CPU, env=environment
    )
    try:
        for child, port in ((upstream, upstream_port), (sink, sink_port), (gateway, gateway_port)):
            procs.wait_port(child, port, 60)
        body = anthropic_body(SCENARIOS[scenario].model, SCENARIOS[scenario].stream)
        headers = {"x-api-key": GATEWAY_KEY, "anthropic-version": "2023-06-01"}
        request = encoded("127.0.0.1", gateway_port, "/v1/messages", encode(body), headers)
        marks: list[float] = []

        def window() -> None:
            marks.append(procs.cpu_seconds([gateway.pid]))

        tally = uvloop.run(
            run_load(gateway_port, request, JSON_ANSWER, concurrency=concurrency,
                     duration=duration, warmup=warmup, on_window=window)
        )  # fmt: skip
        used = procs.cpu_seconds([gateway.pid]) - marks[0]
        if tally.errors or not tally.ok:
            raise RuntimeError(f"{tally.errors} errors, {tally.ok} answers:\n{gateway.tail()}")
        return tally.ok / tally.elapsed, used * 1000 / tally.ok
    finally:
        gateway.stop()
        sink.stop()
        upstream.stop()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.trace_cost", description=__doc__)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument(
        "--scenario", choices=["openai-json", "anthropic-json"], default="openai-json"
    )
    args = parser.parse_args(argv)
    rows: dict[bool, list[tuple[float, float]]] = {False: [], True: []}
    with tempfile.TemporaryDirectory(prefix="mg-trace-") as work:
        for n in range(args.rounds):
            for otel in (False, True):
                rps, cpu_ms = round_trip(
                    Path(work), otel, args.scenario, args.concurrency, args.duration, args.warmup
                )
                rows[otel].append((rps, cpu_ms))
                label = "on " if otel else "off"
                print(
                    f"round {n + 1} traces {label}: {rps:8,.0f} req/s {cpu_ms:.4f} ms CPU/request"
                )
    summary = {}
    for otel, values in rows.items():
        summary["on" if otel else "off"] = {
            "req_per_s": statistics.median(v[0] for v in values),
            "cpu_ms_per_request": statistics.median(v[1] for v in values),
        }
    off, on = summary["off"], summary["on"]
    print(json.dumps(summary))
    print(
        f"median: {off['req_per_s']:,.0f} -> {on['req_per_s']:,.0f} req/s "
        f"({on['req_per_s'] / off['req_per_s'] - 1:+.1%}); "
        f"{off['cpu_ms_per_request']:.4f} -> {on['cpu_ms_per_request']:.4f} ms CPU/request "
        f"({on['cpu_ms_per_request'] / off['cpu_ms_per_request'] - 1:+.1%})"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
