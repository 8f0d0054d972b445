"""The bench's diagnostic that keeps idle CPUs from halting: what it asks of the kernel, and
which scenarios it measures again. Nothing here touches the real device or times anything."""

from __future__ import annotations

import os
import struct
from pathlib import Path

import pytest
from bench import awake, run
from bench.install import Tool


def open_paths() -> set[str]:
    fds = Path("/proc/self/fd")
    return {os.path.realpath(fds / fd) for fd in os.listdir(fds)}


def test_cpus_are_kept_awake_by_asking_for_zero_latency_until_the_block_ends(
    tmp_path: Path,
) -> None:
    device = tmp_path / "cpu_dma_latency"
    device.write_bytes(b"")
    with awake.cpus_kept_awake(device):
        assert device.read_bytes() == struct.pack("i", 0)
        assert str(device) in open_paths()
    # The request lasts as long as the file is open: closing it is what ends it.
    assert str(device) not in open_paths()


def test_the_file_is_closed_when_the_measurement_fails(tmp_path: Path) -> None:
    device = tmp_path / "cpu_dma_latency"
    device.write_bytes(b"")
    with pytest.raises(RuntimeError), awake.cpus_kept_awake(device):
        raise RuntimeError("a measurement failed")
    assert str(device) not in open_paths()


def test_a_machine_without_the_device_is_told_why(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(awake, "CPU_DMA_LATENCY", tmp_path / "missing")
    assert awake.unavailable() == f"{tmp_path / 'missing'} does not exist"


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (
            [],
            [
                "zero/json/openai/c1",
                "zero/json/anthropic/c1",
                "zero/stream/openai/c1",
                "zero/stream/anthropic/c1",
            ],
        ),
        (
            ["--scenarios", "zero/stream/*/c1,zero/json/openai/c64"],
            ["zero/stream/openai/c1", "zero/stream/anthropic/c1"],
        ),
        (["--no-awake"], []),
        (["--quick"], []),
    ],
)
def test_only_the_concurrency_1_zero_scenarios_are_measured_again(
    argv: list[str], expected: list[str]
) -> None:
    plan = run.plan(run._parser().parse_args(argv), Tool("wrk", missing="not needed here"))
    assert sorted(s.name for s in plan.awake) == sorted(expected)
