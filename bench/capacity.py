"""The fake upstream's own capacity, measured with wrk, to show it is not the bottleneck."""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

from bench import load, procs
from bench.measure import Meter
from bench.record import Capacity
from bench.targets import UPSTREAMS, Direct

_SECONDS = 4
_CONNECTIONS = 64
_SPARE_PORT_STEP = 50


def measure_capacity(
    wrk: str, run_dir: Path, upstream_cpus: str | None, other_cpus: str | None, meter: Meter
) -> list[Capacity]:
    zero = UPSTREAMS["zero"]
    direct = Direct()
    found = []
    where = f"on CPU {upstream_cpus}, wrk on CPU {other_cpus}" if upstream_cpus else "unpinned"
    for stream, what in ((False, "JSON"), (True, "20-token stream")):
        request = direct.request("openai", zero, stream)
        meter.wait_for_quiet()
        meter.start()
        result = load.with_wrk(wrk, request, _CONNECTIONS, _SECONDS, other_cpus)
        setup = f"1 upstream process {where}, {what}, {_CONNECTIONS} connections"
        found.append(_capacity(setup, result, meter.foreign_cores()))
    found.append(_two_processes(wrk, run_dir, meter))
    return found


def _two_processes(wrk: str, run_dir: Path, meter: Meter) -> Capacity:
    """Two SO_REUSEPORT processes and two wrk threads, nothing pinned: the machine's ceiling."""
    zero = UPSTREAMS["zero"]
    port = zero.port + _SPARE_PORT_STEP
    command = [sys.executable, "-m", "bench.fake_upstream", "--port", str(port)]
    command += ["--tokens", str(zero.tokens), "--processes", "2"]
    child = procs.start("upstream-capacity", command, run_dir, cwd=Path(__file__).parent.parent)
    try:
        procs.wait_port(child, port, 30)
        request = dataclasses.replace(Direct().request("openai", zero, False), port=port)
        meter.roots.append(child.pid)
        meter.wait_for_quiet()
        meter.start()
        result = load.with_wrk(wrk, request, _CONNECTIONS, _SECONDS, None, threads=2)
        noise = meter.foreign_cores()
    finally:
        meter.roots.remove(child.pid)
        child.stop()
    setup = "2 upstream processes (SO_REUSEPORT) + wrk 2 threads, unpinned, JSON"
    return _capacity(setup, result, noise)


def _capacity(setup: str, result: load.Load, noise: float) -> Capacity:
    return Capacity(setup, result.rps, result.p50_ms, result.p99_ms, noise)
