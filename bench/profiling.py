"""py-spy around a load run: where the gateway's CPU time goes, by package and by function."""

from __future__ import annotations

import re
import subprocess
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

_FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^()]*?)(?::\d+)?\)$")
_RATE = 200
_OURS = "messagegate/"
# The frames every sample goes through (interpreter start, CLI, server, event loop) say nothing.
_EVERYWHERE = 0.99


@dataclass(frozen=True, slots=True)
class Hotspot:
    function: str
    self_pct: float
    total_pct: float


@dataclass(frozen=True, slots=True)
class Profile:
    scenario: str
    samples: int
    by_package: list[tuple[str, float]]
    ours_by_total: list[Hotspot]
    by_self: list[Hotspot]


def start_recording(py_spy: str, pid: int, seconds: float, out: Path) -> subprocess.Popen[bytes]:
    """Sample the process (pausing it briefly, for whole stacks) into raw collapsed stacks."""
    command = [py_spy, "record", "--pid", str(pid), "--duration", str(max(1, round(seconds)))]
    command += ["--rate", str(_RATE), "--format", "raw", "--output", str(out)]
    # Only the thread holding the GIL: py-spy took the gateway's sleeping log-flush thread for
    # busy on this VM, a third of every profile.
    command.append("--gil")
    return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def frame_key(frame: str) -> str:
    """``func (pkg/module.py:12)`` -> ``pkg/module.py:func``; other frames as they are."""
    match = _FRAME.match(frame.strip())
    if match is None:
        return frame.strip()
    return f"{match['file']}:{match['func']}"


def package(key: str) -> str:
    """``messagegate/server/app.py:f`` -> ``messagegate/server``; others by their top name."""
    path = key.rpartition(":")[0] if ":" in key else key
    parts = path.split("/")
    if parts[0] == "messagegate" and len(parts) > 2:
        return "/".join(parts[:2])
    return parts[0] if len(parts) > 1 else path


@dataclass(slots=True)
class _Counts:
    own: Counter[str]
    total: Counter[str]
    samples: int = 0

    def add(self, frames: list[str], count: int) -> None:
        self.samples += count
        self.own[frames[-1]] += count
        for key in set(frames):
            self.total[key] += count

    def pct(self, value: int) -> float:
        return value * 100 / self.samples if self.samples else 0.0

    def hotspot(self, key: str) -> Hotspot:
        return Hotspot(key, self.pct(self.own[key]), self.pct(self.total[key]))


def _parse(raw: str) -> _Counts:
    counts = _Counts(Counter(), Counter())
    for line in raw.splitlines():
        stack, _, count_text = line.rpartition(" ")
        frames = [frame_key(f) for f in stack.split(";") if f.strip()]
        if frames and count_text.isdigit():
            counts.add(frames, int(count_text))
    return counts


def summarize(scenario: str, raw: str, top: int = 15) -> Profile:
    counts = _parse(raw)
    packages: Counter[str] = Counter()
    for key, value in counts.own.items():
        packages[package(key)] += value
    ours = [
        (key, value)
        for key, value in counts.total.most_common()
        if key.startswith(_OURS) and value < counts.samples * _EVERYWHERE
    ]
    return Profile(
        scenario=scenario,
        samples=counts.samples,
        by_package=[(name, counts.pct(v)) for name, v in packages.most_common(top)],
        ours_by_total=[counts.hotspot(key) for key, _ in ours[:top]],
        by_self=[counts.hotspot(key) for key, _ in counts.own.most_common(top)],
    )
