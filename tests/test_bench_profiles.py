"""Which scenarios a bench run profiles: the key ones, and every one whose target it missed."""

from __future__ import annotations

from bench import run
from bench.install import Tool
from bench.measure import Row, compare

from bench_rows import bench_row


def row(scenario: str, target: str, ttft_ms: float) -> Row:
    return bench_row(scenario, target, p50_ms=ttft_ms, ttft_ms=ttft_ms)


def profiled(argv: list[str], rows: list[Row]) -> list[str]:
    plan = run.plan(run._parser().parse_args(argv), Tool("wrk", missing="not needed here"))
    return [s.name for s in run.to_profile(plan, rows)]


def test_a_full_run_profiles_the_scenario_of_a_missed_target_too() -> None:
    rows = [
        row("zero/stream/openai/c1", "DIRECT", 0.04),
        row("zero/stream/openai/c1", "messagegate", 0.44),  # +0.40 ms: over the 0.3 ms limit
        row("zero/stream/anthropic/c1", "DIRECT", 0.04),
        row("zero/stream/anthropic/c1", "messagegate", 0.24),  # +0.20 ms: met
    ]
    compare(rows)
    names = profiled([], rows)
    assert "zero/stream/openai/c1" in names
    assert "zero/stream/anthropic/c1" not in names
    assert set(run._PROFILED) <= set(names)


def test_a_run_of_chosen_scenarios_profiles_each_of_them() -> None:
    names = profiled(["--scenarios", "zero/stream/*/c1"], [])
    assert sorted(names) == ["zero/stream/anthropic/c1", "zero/stream/openai/c1"]
