"""py-spy around a load run: where the gateway's CPU time goes, by function, self and inclusive."""

from __future__ import annotations

import re
import subprocess
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

_FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^()]*?)(?::\d+)?\)$")
_RATE = 200


@dataclass(frozen=True, slots=True)
class Hotspot:
    function: str
    self_pct: float
    total_pct: float


@dataclass(frozen=True, slots=True)
class Profile:
    scenario: str
    samples: int
    by_self: list[Hotspot]
    by_total: list[Hotspot]


def start_recording(py_spy: str, pid: int, seconds: float, out: Path) -> subprocess.Popen[bytes]:
    """Sample the process (pausing it briefly, for whole stacks) into raw collapsed stacks."""
    command = [py_spy, "record", "--pid", str(pid), "--duration", str(max(1, round(seconds)))]
    command += ["--rate", str(_RATE), "--format", "raw", "--output", str(out)]
    return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def frame_key(frame: str) -> str:
    """``func (path/to/module.py:12)`` -> ``module.py:func``; other frames as they are."""
    match = _FRAME.match(frame.strip())
    if match is None:
        return frame.strip()
    path = match["file"]
    short = "/".join(path.split("/")[-2:]) if "/" in path else path
    return f"{short}:{match['func']}"


def summarize(scenario: str, raw: str, top: int = 15) -> Profile:
    own: Counter[str] = Counter()
    total: Counter[str] = Counter()
    samples = 0
    for line in raw.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [frame_key(f) for f in stack.split(";") if f.strip()]
        if not frames:
            continue
        samples += count
        own[frames[-1]] += count
        for key in set(frames):
            total[key] += count
    return Profile(
        scenario,
        samples,
        _hot(own, total, samples, own, top),
        _hot(own, total, samples, total, top),
    )


def _hot(
    own: Counter[str], total: Counter[str], samples: int, order: Counter[str], top: int
) -> list[Hotspot]:
    if samples == 0:
        return []
    return [
        Hotspot(key, own[key] * 100 / samples, total[key] * 100 / samples)
        for key, _ in order.most_common(top)
    ]
