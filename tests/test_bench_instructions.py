"""bench.instructions: its gateway config is a valid config, and it reads callgrind's totals."""

from __future__ import annotations

import json
import os
from pathlib import Path

from bench.instructions import column_name, gateway_config, instructions

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


def test_open_has_no_key_and_stored_key_a_database_in_its_directory(tmp_path: Path) -> None:
    opened = parse_config(
        json.loads(gateway_config(9101, 9102, setup="open", work=tmp_path)),
        source="bench",
        environ={},
    )
    assert (opened.keys, opened.database) == ((), None)
    stored = parse_config(
        json.loads(gateway_config(9101, 9102, setup="stored-key", work=tmp_path)),
        source="bench",
        environ={},
    )
    assert (stored.keys, stored.database) == ((), str(tmp_path / "ledger.db"))
    # Every setup prices its routes alike: a budget has something to charge.
    assert all(r.price is not None for m in stored.models.values() for r in m.routes)


def test_columns_are_named_by_what_varies() -> None:
    assert column_name("main", "open", ["main", "WORKTREE"], ["open"]) == "main"
    assert column_name("main", "open", ["main"], ["open", "stored-key"]) == "open"
    assert column_name("main", "open", ["main", "X"], ["open", "stored-key"]) == "main open"
