"""What traces at 100% sampling cost the gateway's zero-latency throughput, tracing off and on
alternately in one run (off, on, off, on, ...), against a loopback OTLP sink.

The gateway runs on CPU 0, the fake upstream, the sink and the load on CPU 1 (as `bench.run`
pins them). Each round reports requests per second and the gateway's CPU time per request
(user + system, all its threads: the exporter's included); the CPU time is the steadier of the
two when other work shares the machine.

    python -m bench.trace_cost [--rounds 3] [--duration 5] [--concurrency 64]
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from bench.instructions import GATEWAY_KEY, ROOT, free_port, gateway_config
from bench.pinned_round import Load, compare, load_round, start_helper


def round_trip(work: Path, otel: bool, load: Load) -> tuple[float, float]:
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
    sink = start_helper("sink", ["bench.otlp_sink", "--port", str(sink_port)], work)
    try:
        return load_round(
            work,
            config,
            GATEWAY_KEY,
            environment,
            (upstream_port, gateway_port),
            load,
            [(sink, sink_port)],
        )
    finally:
        sink.stop()


def main(argv: Sequence[str] | None = None) -> int:
    return compare(
        argv,
        "python -m bench.trace_cost",
        __doc__,
        "openai-json",
        ("traces off", "traces on"),
        lambda work, _, label, load: round_trip(work, label == "traces on", load),
    )


if __name__ == "__main__":
    raise SystemExit(main())
