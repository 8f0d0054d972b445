"""bench.instructions: its gateway config is a valid config, and it reads callgrind's totals."""

from __future__ import annotations

import json
import os
from pathlib import Path

from bench.instructions import gateway_config, instructions

from messagegate.config import parse_config


def test_the_measured_gateway_serves_both_routes_with_a_key() -> None:
    config = parse_config(json.loads(gateway_config(9101, 9102)), source="bench", environ={})
    assert sorted(config.models) == ["bench-anthropic", "bench-openai"]
    assert {p.kind for p in config.providers.values()} == {"anthropic", "openai"}
    assert config.keys
    assert (config.host, config.port) == ("127.0.0.1", 9102)


def test_the_newest_dump_with_a_total_counts(tmp_path: Path) -> None:
    out = tmp_path / "callgrind.out"
    out.write_text("events: Ir\nsummary: 1000\n")
    (tmp_path / "callgrind.out.1").write_text("events: Ir\ntotals: 0\n")
    assert instructions(out) == 1000
    later = tmp_path / "callgrind.out.2"
    later.write_text("events: Ir\nsummary: 52345\n")
    os.utime(later, (out.stat().st_mtime + 5, out.stat().st_mtime + 5))
    assert instructions(out) == 52345
