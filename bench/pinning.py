"""Where the benches' processes run: the gateway on CPU 0, everything else on CPU 1; and the load
they put on it."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from bench import procs
from bench.instructions import ROOT

GATEWAY_CPU, OTHERS_CPU = "0", "1"


@dataclass(frozen=True, slots=True)
class Load:
    scenario: str
    concurrency: int
    duration: float
    warmup: float


def start_helper(name: str, module: Sequence[str], work: Path) -> procs.Child:
    """A bench process (`python -m ...`) on the CPU the gateway does not use."""
    return procs.start(name, [sys.executable, "-m", *module], work, cpus=OTHERS_CPU, cwd=ROOT)
