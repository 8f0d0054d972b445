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
_IDLE_TIMEOUT = 20.0
_IDLE_WINDOW = 0.2
_IDLE_CORES = 0.05
# Other work on this shared machine (test suites, builds) above this many cores taints a run.
NOISY_CORES = 0.15
_QUIET_SAMPLE = 1.0
# Profiles measured in a window of one continuous load (see _steady_load), and the least
# warm-up that lets their first lockstep wave dissolve.
STEADY_PROFILES = frozenset({"realistic"})
_STEADY_WARMUP = 2.0


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
    noise_cores: float = 0.0
    upstream_cpu_ms: float | None = None
    unfinished: int = 0
    added_p50_ms: float | None = None
    added_p99_ms: float | None = None
    added_ttft_ms: float | None = None
    x_direct: float | None = None


class Meter:
    """CPU that processes other than the bench's own use on the machine during a window."""

    def __init__(self, roots: list[int], quiet_budget: float) -> None:
        self.roots = roots
        self.quiet_budget = quiet_budget
        # The fake upstream of each profile, whose CPU per request each row also reports.
        self.upstream_pids: dict[str, int] = {}
        self._busy = self._ours = self._started = 0.0

    def _own_cpu(self) -> float:
        pids = [pid for root in self.roots for pid in procs.tree(root)]
        return procs.cpu_seconds(pids) + procs.children_cpu_seconds()

    def start(self) -> None:
        self._started = time.monotonic()
        self._busy, self._ours = procs.machine_busy_seconds(), self._own_cpu()

    def foreign_cores(self) -> float:
        elapsed = time.monotonic() - self._started
        busy = procs.machine_busy_seconds() - self._busy
        ours = self._own_cpu() - self._ours
        return max(0.0, busy - ours) / elapsed if elapsed > 0 else 0.0

    def wait_for_quiet(self) -> None:
        """Wait while other work keeps the machine busy, out of a budget for the whole run."""
        while self.quiet_budget > 0:
            self.start()
            time.sleep(_QUIET_SAMPLE)
            self.quiet_budget -= _QUIET_SAMPLE
            if self.foreign_cores() <= NOISY_CORES:
                return


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


def wait_idle(pids: list[int]) -> None:
    """Wait (bounded) until a gateway has worked off requests its clients already gave up on,
    so that its backlog does not run on the gateway CPU during the next target's measurement."""
    deadline = time.monotonic() + _IDLE_TIMEOUT
    while pids and time.monotonic() < deadline:
        before = procs.cpu_seconds(pids)
        time.sleep(_IDLE_WINDOW)
        if procs.cpu_seconds(pids) - before <= _IDLE_CORES * _IDLE_WINDOW:
            return


def run_load(scenario: Scenario, target: Target, settings: Settings, duration: float) -> load.Load:
    request = target.request(scenario.route, UPSTREAMS[scenario.profile], scenario.stream)
    if settings.wrk is not None and not scenario.stream:
        return load.with_wrk(
            settings.wrk, request, scenario.concurrency, duration, settings.load_cpus
        )
    return load.with_client(request, scenario.concurrency, duration)


def measure(
    scenario: Scenario,
    target: Target,
    child: procs.Child | None,
    settings: Settings,
    meter: Meter,
) -> Row:
    """Measure; if other work on the machine disturbed it, wait for quiet and measure once more."""
    row = _measure_once(scenario, target, child, settings, meter)
    if row.noise_cores > NOISY_CORES and meter.quiet_budget > 0:
        meter.wait_for_quiet()
        again = _measure_once(scenario, target, child, settings, meter)
        row = min(row, again, key=lambda r: r.noise_cores)
    return row


def _measure_once(
    scenario: Scenario,
    target: Target,
    child: procs.Child | None,
    settings: Settings,
    meter: Meter,
) -> Row:
    upstream = UPSTREAMS[scenario.profile]
    settle(upstream)
    pids = procs.tree(child.pid) if child is not None else []
    upstream_pid = [meter.upstream_pids[scenario.profile]] if meter.upstream_pids else []
    window = _Window(pids, upstream_pid, upstream, meter)
    if scenario.profile in STEADY_PROFILES:
        result = _steady_load(scenario, target, settings, window)
    else:
        if settings.warmup > 0:
            warm = Settings(settings.warmup, 0, None, settings.load_cpus)
            run_load(scenario, target, warm, settings.warmup)
            settle(upstream)
            wait_idle(pids)
        window.open()
        result = run_load(scenario, target, settings, settings.duration)
    noise = meter.foreign_cores()
    cpu = procs.cpu_seconds(pids) - window.cpu
    upstream_cpu = procs.cpu_seconds(upstream_pid) - window.upstream_cpu
    served = upstream_stats(upstream)["requests"] - window.upstream_requests
    row = _row(scenario, target, result, pids, cpu, served)
    row.noise_cores = noise
    if upstream_pid and result.ok:
        row.upstream_cpu_ms = upstream_cpu * 1000 / result.ok
    wait_idle(pids)
    return row


def _steady_load(
    scenario: Scenario, target: Target, settings: Settings, window: _Window
) -> load.Load:
    """One continuous load: warm-up, then the measured window, with no restart between them.

    A realistic answer takes ~550 ms, so 256 closed-loop clients that all start at once move in
    lockstep waves and a 5 s window holds ~9 of them: whether the last wave lands inside the
    window swung the count by up to 11%, and a gateway that spreads the first burst of 256
    requests over its parsing time lost most of a wave. Measured in the steady state instead.
    """
    request = target.request(scenario.route, UPSTREAMS[scenario.profile], scenario.stream)
    return load.with_client(
        request,
        scenario.concurrency,
        settings.duration,
        warmup=max(settings.warmup, _STEADY_WARMUP),
        on_window=window.open,
    )


class _Window:
    """What the gateway and its upstream had used when the measured window opened."""

    def __init__(
        self, pids: list[int], upstream_pid: list[int], upstream: Upstream, meter: Meter
    ) -> None:
        self.pids, self.upstream_pid, self.upstream, self.meter = (
            pids,
            upstream_pid,
            upstream,
            meter,
        )
        self.cpu = self.upstream_cpu = 0.0
        self.upstream_requests = 0

    def open(self) -> None:
        procs.reset_peak(self.pids)
        self.cpu = procs.cpu_seconds(self.pids)
        self.upstream_cpu = procs.cpu_seconds(self.upstream_pid)
        self.upstream_requests = upstream_stats(self.upstream)["requests"]
        self.meter.start()


def _row(
    scenario: Scenario, target: Target, result: load.Load, pids: list[int], cpu: float, served: int
) -> Row:
    gateway = bool(pids)
    rps = result.rps
    if scenario.profile in STEADY_PROFILES and result.loadgen == "asyncio":
        # Completions in a window hold whole lockstep waves (see _steady_load); Little's law
        # does not. The window's CPU is then divided by the answers that rate gives it.
        rps = result.closed_loop_rps(scenario.concurrency)
    answers = rps * result.seconds
    return Row(
        scenario=scenario.name,
        target=target.name,
        rps=rps,
        p50_ms=result.p50_ms,
        p99_ms=result.p99_ms,
        ttft_p50_ms=result.ttft_p50_ms if scenario.stream else None,
        ttft_p99_ms=result.ttft_p99_ms if scenario.stream else None,
        cpu_ms=cpu * 1000 / answers if gateway and result.ok and answers else None,
        peak_rss_mb=procs.peak_rss_mb(pids) if gateway else None,
        ok=result.ok,
        errors=result.errors,
        upstream_requests=served,
        loadgen=result.loadgen,
        unfinished=result.unfinished,
    )


def compare(rows: list[Row]) -> None:
    """Fill in each row's differences from DIRECT in the same scenario."""
    direct = {r.scenario: r for r in rows if r.target == "DIRECT"}
    for row in rows:
        base = direct.get(row.scenario)
        if base is None or row is base:
            continue
        row.x_direct = row.rps / base.rps if base.rps else None
        if not row.ok:
            continue
        row.added_p50_ms = row.p50_ms - base.p50_ms
        row.added_p99_ms = row.p99_ms - base.p99_ms
        if row.ttft_p50_ms is not None and base.ttft_p50_ms is not None:
            row.added_ttft_ms = row.ttft_p50_ms - base.ttft_p50_ms
