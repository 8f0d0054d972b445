"""Measuring one scenario against one target: warm up, load, and the gateway's CPU and peak RSS."""

from __future__ import annotations

import contextlib
import http.client
import json
import time
from dataclasses import dataclass

from bench import load, procs
from bench.scenarios import Scenario
from bench.targets import UPSTREAMS, Target, Upstream

_SETTLE_TIMEOUT = 10.0


@dataclass(frozen=True, slots=True)
class Settings:
    """How long to load, with what, and where the load generator runs."""

    duration: float
    warmup: float
    wrk: str | None
    load_cpus: str | None


@dataclass(slots=True)
class Row:
    scenario: str
    target: str
    rps: float
    p50_ms: float
    p99_ms: float
    ttft_p50_ms: float | None
    ttft_p99_ms: float | None
    cpu_ms: float | None
    peak_rss_mb: float | None
    ok: int
    errors: int
    upstream_requests: int
    loadgen: str
    added_p50_ms: float | None = None
    added_p99_ms: float | None = None
    added_ttft_ms: float | None = None
    x_direct: float | None = None


def upstream_stats(upstream: Upstream) -> dict[str, int]:
    """The fake upstream's own counters (plain http.client: never through a proxy)."""
    connection = http.client.HTTPConnection("127.0.0.1", upstream.port, timeout=2)
    try:
        connection.request("GET", "/__stats")
        return dict(json.loads(connection.getresponse().read()))
    finally:
        connection.close()


def settle(upstream: Upstream) -> None:
    """Wait (bounded) until the previous run's streams have ended at the upstream."""
    deadline = time.monotonic() + _SETTLE_TIMEOUT
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError, ValueError):
            if upstream_stats(upstream)["streams_open"] <= 0:
                return
        time.sleep(0.1)


def run_load(scenario: Scenario, target: Target, settings: Settings, duration: float) -> load.Load:
    request = target.request(scenario.route, UPSTREAMS[scenario.profile], scenario.stream)
    if settings.wrk is not None and not scenario.stream:
        return load.with_wrk(
            settings.wrk, request, scenario.concurrency, duration, settings.load_cpus
        )
    return load.with_client(request, scenario.concurrency, duration)


def measure(
    scenario: Scenario, target: Target, child: procs.Child | None, settings: Settings
) -> Row:
    upstream = UPSTREAMS[scenario.profile]
    settle(upstream)
    if settings.warmup > 0:
        warm = Settings(settings.warmup, 0, None, settings.load_cpus)
        run_load(scenario, target, warm, settings.warmup)
        settle(upstream)
    pids = procs.tree(child.pid) if child is not None else []
    procs.reset_peak(pids)
    before_cpu, before_up = procs.cpu_seconds(pids), upstream_stats(upstream)["requests"]
    result = run_load(scenario, target, settings, settings.duration)
    cpu = procs.cpu_seconds(pids) - before_cpu
    served = upstream_stats(upstream)["requests"] - before_up
    return _row(scenario, target, result, pids, cpu, served)


def _row(
    scenario: Scenario, target: Target, result: load.Load, pids: list[int], cpu: float, served: int
) -> Row:
    gateway = bool(pids)
    return Row(
        scenario=scenario.name,
        target=target.name,
        rps=result.rps,
        p50_ms=result.p50_ms,
        p99_ms=result.p99_ms,
        ttft_p50_ms=result.ttft_p50_ms if scenario.stream else None,
        ttft_p99_ms=result.ttft_p99_ms if scenario.stream else None,
        cpu_ms=cpu * 1000 / result.ok if gateway and result.ok else None,
        peak_rss_mb=procs.peak_rss_mb(pids) if gateway else None,
        ok=result.ok,
        errors=result.errors,
        upstream_requests=served,
        loadgen=result.loadgen,
    )


def compare(rows: list[Row]) -> None:
    """Fill in each row's differences from DIRECT in the same scenario."""
    direct = {r.scenario: r for r in rows if r.target == "DIRECT"}
    for row in rows:
        base = direct.get(row.scenario)
        if base is None or row is base:
            continue
        row.added_p50_ms = row.p50_ms - base.p50_ms
        row.added_p99_ms = row.p99_ms - base.p99_ms
        row.x_direct = row.rps / base.rps if base.rps else None
        if row.ttft_p50_ms is not None and base.ttft_p50_ms is not None:
            row.added_ttft_ms = row.ttft_p50_ms - base.ttft_p50_ms
