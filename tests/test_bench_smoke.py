"""A few-second smoke run of the benchmark itself: it runs, and its requests pass the gateway.

It proves the bench works, not how fast anything is: no assertion here is about time. It uses
the asyncio load client only (no wrk), no competitors, and ports moved away from a full run's.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
# The quick run takes a few seconds; the bound only keeps a hung child from hanging the suite.
TIMEOUT = 180


def run_quick_bench(out: Path) -> dict[str, Any]:
    command = [sys.executable, "-m", "bench.run", "--quick", "--no-competitors"]
    command += ["--loadgen", "asyncio", "--netns", "off", "--no-pin", "--json", str(out)]
    env = os.environ | {"MG_BENCH_PORT_OFFSET": "1000"}
    done = subprocess.run(
        command, cwd=REPO, env=env, capture_output=True, text=True, timeout=TIMEOUT, check=False
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "| scenario | target |" in done.stdout
    return dict(json.loads(out.read_text()))


def test_quick_bench_runs_and_reaches_the_upstream_through_the_gateway(tmp_path: Path) -> None:
    run = run_quick_bench(tmp_path / "run.json")
    rows = run["rows"]
    assert {r["target"] for r in rows} == {"DIRECT", "probe", "messagegate"}
    scenarios = {r["scenario"] for r in rows}
    assert scenarios == {
        "zero/json/openai/c16",
        "zero/json/anthropic/c16",
        "zero/stream/openai/c16",
        "zero/stream/anthropic/c16",
    }
    for row in rows:
        assert row["rps"] > 0, row
        assert row["ok"] > 0, row
        # Every answer the client counted came from the fake upstream (through the gateway or
        # the bare probe).
        assert row["upstream_requests"] >= row["ok"], row
    gateway = [r for r in rows if r["target"] == "messagegate"]
    assert all(r["cpu_ms"] is not None and r["peak_rss_mb"] for r in gateway)
    streams = [r for r in gateway if "/stream/" in r["scenario"]]
    assert all(r["ttft_p50_ms"] is not None for r in streams)
