"""One bench run as a record: versions, layout, rows; written as JSON and into bench/RESULTS.md."""

from __future__ import annotations

import dataclasses
import importlib.metadata
import json
import os
import platform
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench import report
from bench.measure import Row
from bench.memory import MemoryRow
from bench.profiling import Profile

START = "<!-- bench:results:start -->"
END = "<!-- bench:results:end -->"
_PACKAGES = ("messagegate", "uvicorn", "uvloop", "httptools", "orjson", "msgspec", "aiohttp")


@dataclass(frozen=True, slots=True)
class Capacity:
    setup: str
    rps: float
    p50_ms: float
    p99_ms: float
    noise_cores: float = 0.0


@dataclass(slots=True)
class RunRecord:
    date: str
    command: str
    layout: str
    duration: float
    warmup: float
    versions: dict[str, str]
    rows: list[Row] = field(default_factory=list)
    # The concurrency-1 rows measured again with every CPU kept awake (bench/awake.py).
    awake: list[Row] = field(default_factory=list)
    memory: list[MemoryRow] = field(default_factory=list)
    capacity: list[Capacity] = field(default_factory=list)
    profiles: list[Profile] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def checks(self, target: str = report.OURS) -> list[report.Check]:
        return report.checks(self.rows, self.memory, target)

    def competitors(self) -> list[str]:
        present = {r.target for r in self.rows}
        return [c for c in report.COMPETITORS if c in present]


def versions(tools: dict[str, str]) -> dict[str, str]:
    found = {"python": platform.python_version(), "kernel": platform.release()}
    found["cpu"] = f"{_cpu_model()} x {os.cpu_count()}"
    for package in _PACKAGES:
        try:
            found[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            found[package] = "not installed"
    found["messagegate"] += _git_revision()
    return found | tools


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown cpu"


def _git_revision() -> str:
    probe = subprocess.run(
        ["git", "describe", "--always", "--dirty"],
        capture_output=True,
        text=True,
        cwd=Path(__file__).parent,
        check=False,
    )
    return f" ({probe.stdout.strip()})" if probe.returncode == 0 and probe.stdout.strip() else ""


def to_json(record: RunRecord) -> str:
    data: dict[str, Any] = dataclasses.asdict(record)
    data["checks"] = [dataclasses.asdict(c) for c in record.checks()]
    return json.dumps(data, indent=2)


def to_markdown(record: RunRecord) -> str:
    parts = [
        f"Run: {record.date}, `{record.command}`; {record.duration:g} s per run after "
        f"{record.warmup:g} s of warm-up.",
        f"Layout: {record.layout}",
        "Versions: " + "; ".join(f"{k} {v}" for k, v in record.versions.items()),
        "Columns: `+p50`, `+p99` and `+TTFT` are differences from DIRECT in the same scenario; "
        "CPU and peak RSS are the gateway process's (utime+stime from /proc, VmHWM reset before "
        "each run); `noise` is the CPU, in cores, that processes other than the bench's used on "
        "this shared machine during the run (`!` above 0.15: measured again after waiting for "
        "quiet, the calmer of the two kept).",
    ]
    parts += [f"Note: {note}" for note in record.notes]
    probe = record.checks(report.PROBE)
    parts.append("### Targets of issue 6 (messagegate, one process)")
    if probe:
        parts.append(
            "`bare probe`: the same target read from the rows of issue 6's bare probe of the "
            "minimal proxy path (`bench/probe.py`), measured in the same run."
        )
    parts.append(report.checks_table(record.checks(), probe))
    yardstick = report.probe_table(record.rows)
    if yardstick is not None:
        parts += [
            "### Against issue 6's bare probe, in the same run (a yardstick, not the targets)",
            "Issue 6 set three targets against a bare probe of the minimal proxy path measured "
            "on its own machine (`bench/probe.py`: orjson, a translation, one pooled aiohttp "
            "call, raw ASGI on uvicorn; no validation, auth, routing, logging or metrics). Run "
            "here beside the gateway, the probe shows how fast this machine is today: each "
            "target as a multiple of the probe, there and here.",
        ]
        speed = report.machine_speed(record.rows)
        if speed is not None:
            parts.append(speed)
        parts.append(yardstick)
    if record.competitors():
        parts += [
            "### Ours against the competitors",
            report.versus_table(record.rows, record.competitors()),
        ]
    parts += ["### Every scenario", report.rows_table(record.rows)]
    if record.awake:
        parts += [
            "### Concurrency 1 with every CPU kept from halting (a diagnostic, not the targets)",
            "The same scenarios once more, with idle CPUs kept polling instead of halting (a PM "
            "QoS request for zero wake-up latency, `bench/awake.py`). An idle CPU of this VM "
            "halts, and waking it costs a trip through the hypervisor, paid at each of the four "
            "CPU crossings a gateway adds at concurrency 1 and at none of DIRECT's, whose client "
            "and upstream share a CPU. What remains is the gateway's own work.",
            report.rows_table(record.awake),
        ]
    if record.memory:
        parts += [
            "### Memory (OpenAI route, streams open at once)",
            report.memory_table(record.memory),
        ]
    if record.capacity:
        parts += ["### The fake upstream's own capacity", _capacity_table(record.capacity)]
    for profile in record.profiles:
        title = f"### Profile: {profile.scenario} ({profile.samples} py-spy samples of busy time)"
        parts += [title, report.profile_table(profile)]
    return "\n\n".join(parts) + "\n"


def _capacity_table(capacity: list[Capacity]) -> str:
    lines = [
        [c.setup, f"{c.rps:,.0f}", f"{c.p50_ms:.2f}", f"{c.p99_ms:.2f}", f"{c.noise_cores:.2f}"]
        for c in capacity
    ]
    return report.markdown_table(["setup", "req/s", "p50 ms", "p99 ms", "noise"], lines)


def write_results(path: Path, record: RunRecord) -> None:
    """Replace the generated section of RESULTS.md; the hand-written notes around it stay."""
    section = f"{START}\n{to_markdown(record)}{END}"
    text = path.read_text() if path.exists() else f"# Benchmark results\n\n{START}\n{END}\n"
    if START in text and END in text:
        head, _, rest = text.partition(START)
        _, _, tail = rest.partition(END)
        text = head + section + tail
    else:
        text = text.rstrip("\n") + "\n\n" + section + "\n"
    path.write_text(text)
