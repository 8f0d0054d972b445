"""What traces at 100% sampling cost the gateway's zero-latency throughput, tracing off and on
alternately in one run (off, on, off, on, ...), against a loopback OTLP sink.

The gateway runs on CPU 0, the fake upstream, the sink and the load on CPU 1 (as `bench.run`
pins them). Each round reports requests per second and the gateway's CPU time per request
(user + system, all its threads: the exporter's included); the CPU time is the steadier of the
two when other work shares the machine.

    python -m bench.trace_cost [--rounds 3] [--duration 5] [--concurrency 64]
    python -m bench.trace_cost --windows 20   # both up at once, 2 s windows in turn
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from bench import procs
from bench.instructions import GATEWAY_KEY, ROOT, free_port, gateway_config
from bench.interleaved import Gateway, Windows, measure
from bench.otlp_sink import answered
from bench.pinned_round import compare, load_round
from bench.pinning import Load, start_helper


def gateway(work: Path, otel: bool, upstream_port: int, sink_port: int) -> Gateway:
    """A gateway with traces off, or on (every request sampled, exported to the sink)."""
    port = free_port()
    extra: dict[str, object] = {"otel": {"enabled": True}} if otel else {}
    config = work / f"gateway-{otel}.json"
    config.write_text(gateway_config(upstream_port, port, None, extra))
    environment = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT / "src")}
    if otel:
        environment |= {
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": f"http://127.0.0.1:{sink_port}/v1/traces",
            "OTEL_TRACES_SAMPLER": "always_on",
        }
    return Gateway("traces on" if otel else "traces off", config, port, GATEWAY_KEY, environment)


def round_trip(work: Path, otel: bool, load: Load) -> tuple[float, float]:
    """(requests per second, gateway CPU milliseconds per request) of one gateway run."""
    upstream_port, sink_port = free_port(), free_port()
    g = gateway(work, otel, upstream_port, sink_port)
    sink = start_helper("sink", ["bench.otlp_sink", "--port", str(sink_port)], work)
    try:
        ports = (upstream_port, g.port)
        measured = load_round(
            work, g.config, g.key, g.environment, ports, load, [(sink, sink_port)]
        )
    finally:
        sink.stop()
    if otel:
        _exported(sink)
    return measured


def interleave(work: Path, load: Load, windows: int) -> list[Windows]:
    upstream_port, sink_port = free_port(), free_port()
    gateways = [gateway(work, otel, upstream_port, sink_port) for otel in (False, True)]
    sink = start_helper("sink", ["bench.otlp_sink", "--port", str(sink_port)], work)
    try:
        measured = measure(work, upstream_port, gateways, load, windows, [(sink, sink_port)])
    finally:
        sink.stop()
    _exported(sink)
    return measured


def _exported(sink: procs.Child) -> None:
    """Say what the sink was sent; fail when it was sent nothing (every export failed)."""
    exports, body_bytes = answered(sink.log)
    if not exports:
        raise RuntimeError("the OTLP sink answered no export: the run measured failing ones")
    print(f"  the sink answered {exports:,} exports ({body_bytes:,} bytes)")


def main(argv: Sequence[str] | None = None) -> int:
    return compare(
        argv,
        "python -m bench.trace_cost",
        __doc__,
        "openai-json",
        ("traces off", "traces on"),
        lambda work, _, label, load: round_trip(work, label == "traces on", load),
        interleave,
    )


if __name__ == "__main__":
    raise SystemExit(main())
