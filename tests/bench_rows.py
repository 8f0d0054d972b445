"""Bench result rows, as the bench's report reads them, for tests of what it concludes."""

from __future__ import annotations

from bench.measure import Row


def bench_row(
    scenario: str,
    target: str,
    *,
    rps: float = 1000.0,
    p50_ms: float = 1.0,
    ttft_ms: float | None = None,
    cpu_ms: float | None = 0.1,
) -> Row:
    """One measured row; p99 equals p50, and every answer came from the upstream."""
    return Row(
        scenario=scenario,
        target=target,
        rps=rps,
        p50_ms=p50_ms,
        p99_ms=p50_ms,
        ttft_p50_ms=ttft_ms,
        ttft_p99_ms=ttft_ms,
        cpu_ms=cpu_ms,
        peak_rss_mb=80.0,
        ok=1000,
        errors=0,
        upstream_requests=1000,
        loadgen="asyncio",
    )
