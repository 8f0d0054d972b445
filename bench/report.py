"""The results as tables: every row, ours against each competitor, and issue 6's targets."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from bench.measure import NOISY_CORES, Row
from bench.memory import MemoryRow
from bench.profiling import Profile
from bench.targets import ROUTES, UPSTREAMS

OURS = "messagegate"
PROBE = "probe"
COMPETITORS = ("litellm", "ccr")


@dataclass(frozen=True, slots=True)
class Check:
    """One target of issue 6, as measured."""

    what: str
    measured: str
    limit: str
    met: bool
    note: str = ""
    # False when the run cannot tell: DIRECT, the measure's baseline, was held back.
    judged: bool = True

    @property
    def scenario(self) -> str | None:
        """The scenario whose row this target is read from; None for the memory targets."""
        head = self.what.split(" ", 1)[0]
        return head if "/" in head else None


def _num(value: float | None, digits: int = 2) -> str:
    if value is None:
        return "-"
    return f"{value:,.{digits}f}"


def _signed(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:+,.{digits}f}"


def markdown_table(header: list[str], lines: Iterable[list[str]]) -> str:
    align = ["---" if i == 0 or header[i] == "target" else "---:" for i in range(len(header))]
    out = ["| " + " | ".join(header) + " |", "|" + "|".join(align) + "|"]
    out += ["| " + " | ".join(line) + " |" for line in lines]
    return "\n".join(out)


ROW_HEADER = [
    "scenario",
    "target",
    "req/s",
    "x DIRECT",
    "p50 ms",
    "p99 ms",
    "+p50 ms",
    "+p99 ms",
    "TTFT p50 ms",
    "+TTFT ms",
    "CPU ms/req",
    "peak RSS MB",
    "upstream CPU ms/req",
    "errors",
    "noise",
]


def _rate(value: float) -> str:
    return _num(value, 0 if value >= 100 else 1)


def row_cells(row: Row) -> list[str]:
    done = row.ok > 0
    unfinished = f" ({row.unfinished} unfinished)" if row.unfinished and not done else ""
    return [
        row.scenario,
        row.target,
        _rate(row.rps) + unfinished,
        _num(row.x_direct, 3),
        _num(row.p50_ms if done else None),
        _num(row.p99_ms if done else None),
        _signed(row.added_p50_ms),
        _signed(row.added_p99_ms),
        _num(row.ttft_p50_ms),
        _signed(row.added_ttft_ms),
        _num(row.cpu_ms, 3),
        _num(row.peak_rss_mb, 0),
        _num(row.upstream_cpu_ms, 3),
        str(row.errors),
        _num(row.noise_cores, 2) + (" !" if row.noise_cores > NOISY_CORES else ""),
    ]


def rows_table(rows: list[Row]) -> str:
    return markdown_table(ROW_HEADER, (row_cells(r) for r in rows))


def _ratio(a: float | None, b: float | None) -> str:
    if a is None or b is None or b == 0:
        return "-"
    return f"{a / b:,.1f}x"


def versus_table(rows: list[Row], competitors: list[str]) -> str:
    """Per scenario: throughput, added p50 and CPU of ours and of each competitor, with ratios."""
    by = {(r.scenario, r.target): r for r in rows}
    header = ["scenario", "ours req/s", "ours +p50 ms", "ours CPU ms"]
    for name in competitors:
        header += [f"{name} req/s", f"ours/{name}", f"{name} +p50 ms", f"{name} CPU ms"]
        header.append(f"{name}/ours CPU")
    lines = []
    for scenario in dict.fromkeys(r.scenario for r in rows):
        ours = by.get((scenario, OURS))
        if ours is None:
            continue
        line = [scenario, _rate(ours.rps), _signed(ours.added_p50_ms), _num(ours.cpu_ms, 3)]
        for name in competitors:
            line += _versus_cells(ours, by.get((scenario, name)))
        lines.append(line)
    return markdown_table(header, lines)


def _versus_cells(ours: Row, other: Row | None) -> list[str]:
    if other is None:
        return ["-"] * 5
    added = other.added_p50_ms if other.ok else None
    return [
        _rate(other.rps),
        _ratio(ours.rps, other.rps),
        _signed(added),
        _num(other.cpu_ms, 2),
        _ratio(other.cpu_ms, ours.cpu_ms),
    ]


def memory_table(rows: list[MemoryRow]) -> str:
    header = ["target", "idle MB", "256 open: peak MB", "seen open", "1000 open: peak MB"]
    header += ["seen open", "RSS after 1k / 10k streams MB", "drift", "errors"]
    lines = []
    for m in rows:
        soak = f"{m.soak[0][1]:.0f} / {m.soak[-1][1]:.0f}" if len(m.soak) >= 2 else "not run"
        lines.append(
            [
                m.target,
                _num(m.idle_mb, 0),
                _num(m.peak_mb.get(256), 0),
                str(m.open_seen.get(256, 0)),
                _num(m.peak_mb.get(1000), 0),
                str(m.open_seen.get(1000, 0)),
                soak,
                _signed(m.soak_drift_pct, 1) + "%" if m.soak_drift_pct is not None else "-",
                str(m.errors),
            ]
        )
    return markdown_table(header, lines)


def checks_table(checks: list[Check], probe: Sequence[Check] = ()) -> str:
    """Each target as measured; with the probe's checks, the probe's value for each beside it."""
    header = ["target (issue 6)", "measured", "limit", "met", "by how much"]
    by_what = {c.what: c for c in probe}
    if probe:
        header += ["bare probe", "probe met"]
    lines = []
    for c in checks:
        line = [c.what, c.measured, c.limit, _verdict(c), c.note]
        if probe:
            theirs = by_what.get(c.what)
            line += ["-", "-"] if theirs is None else [theirs.measured, _verdict(theirs)]
        lines.append(line)
    return markdown_table(header, lines)


def _verdict(check: Check) -> str:
    if not check.judged:
        return "not judged"
    return "yes" if check.met else "**no**"


def profile_table(profile: Profile) -> str:
    """Self time by package, our functions by inclusive time, and the top functions by self time."""
    packages = markdown_table(
        ["package (self time)", "%"], ([name, _num(pct, 1)] for name, pct in profile.by_package)
    )
    ours = markdown_table(
        ["messagegate function (inclusive)", "total %", "self %"],
        ([h.function, _num(h.total_pct, 1), _num(h.self_pct, 1)] for h in profile.ours_by_total),
    )
    own = markdown_table(
        ["function (self)", "self %", "total %"],
        ([h.function, _num(h.self_pct, 1), _num(h.total_pct, 1)] for h in profile.by_self),
    )
    return "\n\n".join([packages, ours, own])


def _find(rows: list[Row], scenario: str, target: str = OURS) -> Row | None:
    return next((r for r in rows if r.scenario == scenario and r.target == target), None)


def _check(
    what: str, value: float | None, limit: float, unit: str, ok: Callable[[float, float], bool]
) -> Check | None:
    if value is None:
        return None
    met = ok(value, limit)
    miss = abs(value - limit)
    pct = f" ({miss / limit * 100:.0f}%)" if limit else ""
    note = "" if met else f"missed by {miss:,.2f} {unit}{pct}"
    return Check(what, f"{value:,.3f} {unit}", f"{limit:,} {unit}", met, note)


def _at_least(v: float, lim: float) -> bool:
    return v >= lim


def _below(v: float, lim: float) -> bool:
    return v < lim


def _at_most(v: float, lim: float) -> bool:
    return v <= lim


def checks(rows: list[Row], memory: list[MemoryRow], target: str = OURS) -> list[Check]:
    """Issue 6's targets, read from `target`'s rows (messagegate's unless told)."""
    found: list[Check | None] = []
    c64 = _find(rows, "zero/json/openai/c64", target)
    if c64 is not None:
        found.append(_check("zero/json/openai/c64 throughput", c64.rps, 5000, "req/s", _at_least))
        found.append(
            _check("zero/json/openai/c64 gateway CPU", c64.cpu_ms, 0.2, "ms/req", _at_most)
        )
    for route in ROUTES:
        found += _route_checks(rows, route, target)
    found += _memory_checks(memory, target)
    return [c for c in found if c is not None]


def _route_checks(rows: list[Row], route: str, target: str) -> list[Check | None]:
    out: list[Check | None] = []
    c1 = _find(rows, f"zero/json/{route}/c1", target)
    if c1 is not None:
        out.append(_check(f"zero/json/{route}/c1 added p50", c1.added_p50_ms, 0.3, "ms", _below))
        out.append(_check(f"zero/json/{route}/c1 added p99", c1.added_p99_ms, 1.0, "ms", _below))
    s1 = _find(rows, f"zero/stream/{route}/c1", target)
    if s1 is not None:
        out.append(
            _check(f"zero/stream/{route}/c1 added TTFT", s1.added_ttft_ms, 0.3, "ms", _below)
        )
    s64 = _find(rows, f"zero/stream/{route}/c64", target)
    if s64 is not None:
        out.append(
            _check(f"zero/stream/{route}/c64 throughput", s64.rps, 3000, "streams/s", _at_least)
        )
        out.append(
            _check(f"zero/stream/{route}/c64 gateway CPU", s64.cpu_ms, 2.5, "ms/stream", _at_most)
        )
    for kind, floor in (("stream", 0.95), ("json", 0.98)):
        name = f"realistic/{kind}/{route}/c256"
        r256 = _find(rows, name, target)
        if r256 is not None:
            held = _direct_held_back(rows, name, 256)
            for check in (
                _check(f"{name} vs DIRECT", r256.x_direct, floor, "x", _at_least),
                _check(f"{name} added p50", r256.added_p50_ms, 5.0, "ms", _below),
            ):
                if check is not None and held is not None:
                    check = dataclasses.replace(check, judged=False, note=held)
                out.append(check)
    return out


# DIRECT below this share of the rate its upstream's pacing allows was held back by the CPU of
# its load generator, which it shares with the upstream; a ratio to it says nothing of a gateway.
DIRECT_PACED_FLOOR = 0.9


def _direct_held_back(rows: list[Row], scenario: str, concurrency: int) -> str | None:
    """Why the realistic `scenario`'s DIRECT row cannot serve as a baseline, or None."""
    direct = _find(rows, scenario, "DIRECT")
    if direct is None:
        return None
    allowed = concurrency / UPSTREAMS["realistic"].answer_seconds
    share = direct.rps / allowed
    if share >= DIRECT_PACED_FLOOR:
        return None
    return (
        f"DIRECT did {share:.3f}x of the {allowed:,.0f}/s its upstream's pacing allows:"
        " its load generator's CPU was the limit"
    )


def _memory_checks(memory: list[MemoryRow], target: str) -> list[Check | None]:
    ours = next((m for m in memory if m.target == target), None)
    if ours is None:
        return []
    out = [
        _check("RSS with 256 open streams", ours.peak_mb.get(256), 100, "MB", _below),
        _check("RSS with 1000 open streams", ours.peak_mb.get(1000), 250, "MB", _below),
    ]
    drift = ours.soak_drift_pct
    if drift is not None:
        out.append(_check("RSS drift over 10,000 streams", abs(drift), 10, "%", _at_most))
    return out


@dataclass(frozen=True, slots=True)
class Yardstick:
    """A target of issue 6 next to what the issue's bare probe measured on the issue's machine."""

    what: str
    scenario: str
    read: Callable[[Row], float | None]
    probe: float
    target: float
    ok: Callable[[float, float], bool]


YARDSTICKS = (
    Yardstick("throughput, req/s", "zero/json/openai/c64", lambda r: r.rps, 8100, 5000, _at_least),
    Yardstick(
        "gateway CPU, ms/req", "zero/json/openai/c64", lambda r: r.cpu_ms, 0.12, 0.2, _at_most
    ),
    Yardstick("added p50, ms", "zero/json/openai/c1", lambda r: r.added_p50_ms, 0.24, 0.3, _below),
)
# DIRECT's throughput on the issue's machine, zero/json/openai/c64.
ISSUE_DIRECT_RPS = 50_000


def probe_table(rows: list[Row]) -> str | None:
    """Each target the issue set against its probe, as a multiple of the probe, here and there."""
    header = ["scenario", "measure", "issue: probe", "issue: target", "target / probe"]
    header += ["here: probe", "here: messagegate", "messagegate / probe", "within the ratio"]
    lines = []
    for y in YARDSTICKS:
        probe, ours = _find(rows, y.scenario, PROBE), _find(rows, y.scenario)
        here = None if probe is None else y.read(probe)
        value = None if ours is None else y.read(ours)
        if here is None or value is None or here <= 0:
            continue
        allowed, found = y.target / y.probe, value / here
        verdict = "yes" if y.ok(found, allowed) else "**no**"
        issue = [y.scenario, y.what, f"{y.probe:,g}", f"{y.target:,g}", f"{allowed:.2f}x"]
        lines.append([*issue, _num(here, 3), _num(value, 3), f"{found:.2f}x", verdict])
    return markdown_table(header, lines) if lines else None


def machine_speed(rows: list[Row]) -> str | None:
    """DIRECT's zero/json/openai/c64 throughput here against the issue's machine."""
    direct = _find(rows, "zero/json/openai/c64", "DIRECT")
    if direct is None or direct.rps <= 0:
        return None
    return (
        f"DIRECT served {direct.rps:,.0f} req/s in zero/json/openai/c64 here; the issue measured"
        f" ~{ISSUE_DIRECT_RPS:,} on its machine ({direct.rps / ISSUE_DIRECT_RPS:.2f}x)."
    )
