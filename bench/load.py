"""One load run with either generator (wrk + Lua, or the asyncio client), as one result type."""

from __future__ import annotations

import json
import math
import subprocess
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import uvloop

from bench import procs
from bench.client import Tally, run_load
from bench.targets import Request

LUA = Path(__file__).with_name("post.lua")
_WRK_TIMEOUT = "10s"


@dataclass(frozen=True, slots=True)
class Load:
    ok: int
    errors: int
    seconds: float
    p50_ms: float
    p99_ms: float
    ttft_p50_ms: float | None
    ttft_p99_ms: float | None
    loadgen: str
    # Requests still in flight when the time was up (their latency exceeds the run).
    unfinished: int = 0
    mean_ms: float = 0.0

    @property
    def rps(self) -> float:
        return self.ok / self.seconds if self.seconds > 0 else 0.0

    def closed_loop_rps(self, concurrency: int) -> float:
        """Little's law for N clients that always wait on an answer: N / mean latency."""
        return concurrency * 1000 / self.mean_ms if self.mean_ms > 0 else 0.0


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile of unsorted values (0 for none)."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def from_tally(tally: Tally) -> Load:
    ttft = tally.ttfts
    return Load(
        ok=tally.ok,
        errors=tally.errors + tally.incomplete,
        seconds=tally.elapsed,
        p50_ms=percentile(tally.latencies, 50) * 1000,
        p99_ms=percentile(tally.latencies, 99) * 1000,
        ttft_p50_ms=percentile(ttft, 50) * 1000 if ttft else None,
        ttft_p99_ms=percentile(ttft, 99) * 1000 if ttft else None,
        loadgen="asyncio",
        mean_ms=sum(tally.latencies) * 1000 / len(tally.latencies) if tally.latencies else 0.0,
        unfinished=max(
            0,
            tally.started - tally.early - tally.ok - tally.errors - tally.incomplete - tally.late,
        ),
    )


def with_client(
    request: Request,
    concurrency: int,
    duration: float,
    warmup: float = 0.0,
    on_window: Callable[[], None] | None = None,
) -> Load:
    tally = uvloop.run(
        run_load(
            request.port,
            request.encoded(),
            request.markers,
            concurrency=concurrency,
            duration=duration,
            warmup=warmup,
            on_window=on_window,
        )
    )
    return from_tally(tally)


def with_wrk(
    wrk: str,
    request: Request,
    concurrency: int,
    duration: float,
    cpus: str | None,
    threads: int = 1,
) -> Load:
    """wrk with N connections; whole seconds only (wrk's own resolution)."""
    seconds = max(1, round(duration))
    with tempfile.NamedTemporaryFile(suffix=".json") as payload:
        payload.write(request.payload)
        payload.flush()
        headers = [f"{k}: {v}" for k, v in request.headers.items()]
        url = f"http://127.0.0.1:{request.port}{request.path}"
        command = [
            wrk,
            f"-t{threads}",
            f"-c{concurrency}",
            f"-d{seconds}s",
            "--timeout",
            _WRK_TIMEOUT,
        ]
        command += ["-s", str(LUA), url, "--", payload.name, *headers]
        done = subprocess.run(
            procs.pinned(command, cpus), capture_output=True, text=True, timeout=seconds + 30
        )
    return _parse_wrk(done.stdout + done.stderr)


def _parse_wrk(output: str) -> Load:
    line = next((x for x in output.splitlines() if x.startswith("WRKJSON ")), None)
    if line is None:
        raise RuntimeError(f"wrk printed no summary:\n{output[-800:]}")
    data = json.loads(line.removeprefix("WRKJSON "))
    socket_errors = sum(data[k] for k in ("connect", "read", "write", "timeout"))
    return Load(
        ok=data["requests"] - data["status"],
        errors=data["status"] + socket_errors,
        seconds=data["duration_us"] / 1e6,
        p50_ms=data["p50_us"] / 1000,
        p99_ms=data["p99_us"] / 1000,
        ttft_p50_ms=None,
        ttft_p99_ms=None,
        loadgen="wrk",
    )
