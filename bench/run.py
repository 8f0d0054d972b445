"""The one bench command: every scenario against DIRECT, messagegate and the competitors.

python -m bench.run                  # full run (~15 min), writes bench/RESULTS.md
python -m bench.run --quick          # a few seconds: 4 scenarios, no competitors
python -m bench.run --scenarios 'zero/json/*/c64,memory' --no-competitors
python -m bench.run --scenarios 'zero/*/*/c64' --no-competitors --accounted
"""

from __future__ import annotations

import argparse
import datetime
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from bench import (
    awake,
    capacity,
    install,
    measure,
    memory,
    procs,
    profiling,
    record,
    report,
    scenarios,
)
from bench.install import Tool
from bench.targets import (
    UPSTREAMS,
    AccountedMessagegate,
    ClaudeCodeRouter,
    Direct,
    LiteLLM,
    Messagegate,
    Probe,
    Target,
)

RESULTS = Path(__file__).with_name("RESULTS.md")
_IN_NETNS = "MG_BENCH_IN_NETNS"
_START_TIMEOUT = 60.0
_NETNS_TIMEOUT = 45 * 60
_KEEP_RUNS = 20


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bench.run",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--quick", action="store_true", help="a few-second smoke run")
    parser.add_argument(
        "--scenarios", help="comma-separated globs, e.g. 'zero/*/openai/c64,memory'"
    )
    parser.add_argument(
        "--competitors",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="also run LiteLLM and claude-code-router (default: on, off with --quick)",
    )
    parser.add_argument(
        "--accounted",
        action="store_true",
        help="also run messagegate with a stored key (rpm, tpm, budget) and its ledger"
        " journalled: what auth, limits and the ledger cost",
    )
    parser.add_argument("--duration", type=float, help="seconds per measured run (default 5)")
    parser.add_argument("--warmup", type=float, help="seconds of warm-up before each (default 1)")
    parser.add_argument(
        "--loadgen",
        choices=["wrk", "asyncio"],
        default="wrk",
        help="non-streaming load generator (streams always use the asyncio client)",
    )
    parser.add_argument(
        "--profile", action="store_true", help="py-spy the gateway on key scenarios"
    )
    parser.add_argument("--hold", type=float, default=4.0, help="seconds each memory level is held")
    parser.add_argument(
        "--soak",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="10,000 streams for the memory drift check",
    )
    parser.add_argument(
        "--results", type=Path, help="write this results file (full runs: RESULTS.md)"
    )
    parser.add_argument(
        "--quiet-wait",
        type=float,
        help="seconds, over the whole run, to wait out other work on the machine before"
        " measuring a disturbed run again (default 180; 0 with --quick)",
    )
    parser.add_argument("--json", type=Path, help="also write the run as JSON here")
    parser.add_argument(
        "--netns",
        choices=["auto", "on", "off"],
        default="auto",
        help="run inside a fresh loopback-only network namespace",
    )
    parser.add_argument(
        "--awake",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="measure the concurrency-1 zero scenarios once more (DIRECT, the probe and"
        " messagegate) with every CPU kept from halting: what the VM's wake-ups add (off with"
        " --quick)",
    )
    parser.add_argument(
        "--pin",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="gateway on CPU 0; upstream and load generator on CPU 1",
    )
    return parser


@dataclass(frozen=True, slots=True)
class Plan:
    matrix: list[scenarios.Scenario]
    # Measured again with every CPU kept awake (see bench/awake.py).
    awake: list[scenarios.Scenario]
    memory: bool
    capacity: bool
    competitors: bool
    accounted: bool
    settings: measure.Settings
    gateway_cpus: str | None
    results: Path | None
    profile: bool
    soak: bool
    hold: float
    quiet_budget: float
    chosen: bool


def plan(args: argparse.Namespace, wrk: Tool) -> Plan:
    matrix = scenarios.quick_matrix() if args.quick else scenarios.full_matrix()
    pin = args.pin and (os.cpu_count() or 1) >= 2
    duration = args.duration or (0.5 if args.quick else 5.0)
    warmup = args.warmup if args.warmup is not None else (0.2 if args.quick else 1.0)
    use_wrk = args.loadgen == "wrk" and wrk.ok
    settings = measure.Settings(
        duration, warmup, wrk.command[0] if use_wrk else None, "1" if pin else None
    )
    full = not args.quick and not args.scenarios
    chosen = scenarios.select(matrix, args.scenarios)
    return Plan(
        matrix=chosen,
        awake=[
            s
            for s in chosen
            if args.awake and not args.quick and s.profile == "zero" and s.concurrency == 1
        ],
        memory=scenarios.wants(args.scenarios, scenarios.MEMORY) and not args.quick,
        capacity=scenarios.wants(args.scenarios, scenarios.CAPACITY) and not args.quick and use_wrk,
        competitors=args.competitors if args.competitors is not None else not args.quick,
        accounted=args.accounted,
        settings=settings,
        gateway_cpus="0" if pin else None,
        results=args.results or (RESULTS if full else None),
        profile=args.profile,
        soak=args.soak,
        hold=args.hold,
        chosen=bool(args.scenarios),
        quiet_budget=args.quiet_wait if args.quiet_wait is not None else (0 if args.quick else 180),
    )


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def netns_available() -> bool:
    if os.geteuid() != 0 or not shutil.which("unshare") or not shutil.which("ip"):
        return False
    probe = subprocess.run(["unshare", "--net", "true"], capture_output=True, check=False)
    return probe.returncode == 0


def rerun_in_netns(argv: Sequence[str]) -> int:
    """Run this same command in a new network namespace that has only loopback."""
    env = os.environ | {_IN_NETNS: "1", install.NO_INSTALL: "1"}
    inner = 'ip link set lo up && exec "$@"'
    command = ["unshare", "--net", "--", "sh", "-c", inner, "sh", sys.executable, "-m", "bench.run"]
    log("bench: running inside a fresh loopback-only network namespace")
    child = subprocess.Popen([*command, *argv], env=env)
    try:
        return child.wait(_NETNS_TIMEOUT)
    except subprocess.TimeoutExpired:
        log("bench: gave up after the time limit")
        return 1
    finally:
        # Interrupted or out of time: let the inner bench stop what it started, then make sure.
        if child.poll() is None:
            child.terminate()
            try:
                child.wait(30)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait(5)


def _exit_on_sigterm() -> None:
    """SIGTERM unwinds like Ctrl-C, so every finally-block stops its processes."""
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))


class Bench:
    """Starts upstreams and targets, runs the plan interleaved, always stops what it started."""

    def __init__(self, plan: Plan, tools: dict[str, Tool], argv: Sequence[str]) -> None:
        self.plan = plan
        self.tools = tools
        self.run_dir = _new_run_dir()
        self.children: list[procs.Child] = []
        self.targets: list[tuple[Target, procs.Child | None]] = []
        self.meter = measure.Meter([os.getpid()], plan.quiet_budget)
        tool_versions = {t.name: t.version or f"missing: {t.missing[:80]}" for t in tools.values()}
        self.record = record.RunRecord(
            date=datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
            command="python -m bench.run " + shlex.join(argv),
            layout=_layout(plan),
            duration=plan.settings.duration,
            warmup=plan.settings.warmup,
            versions=record.versions(tool_versions),
        )

    def run(self) -> record.RunRecord:
        log(f"bench: logs in {self.run_dir}")
        with procs.running(self.children):
            self._start_upstreams()
            self._start_targets()
            self.meter.roots += [child.pid for child in self.children]
            if self.plan.settings.load_cpus is not None:
                os.sched_setaffinity(0, {int(self.plan.settings.load_cpus)})
            if self.plan.capacity:
                self._run_capacity()
            self._run_matrix()
            # Each row's difference from DIRECT, which the profiles' choice reads too.
            measure.compare(self.record.rows)
            self._run_awake()
            if self.plan.memory:
                self._run_memory()
            self._run_profiles()
        measure.compare(self.record.awake)
        return self.record

    def _start_upstreams(self) -> None:
        for upstream in UPSTREAMS.values():
            _claim(upstream.port)
            child = procs.start(
                f"upstream-{upstream.name}",
                upstream.command(),
                self.run_dir,
                cpus=self.plan.settings.load_cpus,
                cwd=_repo(),
            )
            self.children.append(child)
            procs.wait_port(child, upstream.port, _START_TIMEOUT)
            self.meter.upstream_pids[upstream.name] = child.pid

    def _start_targets(self) -> None:
        ours = Messagegate(self.record.versions["messagegate"])
        targets: list[Target] = [Direct(), Probe(), ours]
        if self.plan.accounted:
            targets.append(AccountedMessagegate(ours.version))
        if self.plan.competitors:
            targets += self._competitors()
        for target in targets:
            try:
                if target.port:
                    _claim(target.port)
                child = target.start(self.run_dir, self.plan.gateway_cpus)
                if child is not None:
                    self.children.append(child)
                    procs.wait_port(child, target.port, _START_TIMEOUT)
            except (procs.ProcessFailed, OSError) as exc:
                if target.name == "messagegate":
                    raise
                self.record.notes.append(f"{target.name} could not be started: {exc}")
                continue
            self.targets.append((target, child))

    def _competitors(self) -> list[Target]:
        found: list[Target] = []
        for name, make in (("litellm", LiteLLM), ("ccr", ClaudeCodeRouter)):
            tool = self.tools[name]
            if tool.ok:
                found.append(make(tool))
            else:
                self.record.notes.append(f"{name} was not run: {tool.missing}")
        return found

    def _run_capacity(self) -> None:
        wrk = self.plan.settings.wrk
        assert wrk is not None
        found = capacity.measure_capacity(
            wrk, self.run_dir, self.plan.settings.load_cpus, self.plan.gateway_cpus, self.meter
        )
        self.record.capacity = found
        for c in found:
            log(f"capacity: {c.setup}: {c.rps:,.0f} req/s, p50 {c.p50_ms:.2f} ms")

    def _run_matrix(self) -> None:
        for scenario in self.plan.matrix:
            for target, child in self.targets:
                if child is not None and not child.alive():
                    self._note_dead(target, child)
                    continue
                row = measure.measure(scenario, target, child, self.plan.settings, self.meter)
                self.record.rows.append(row)
                log(_progress(row))

    def _run_awake(self) -> None:
        kept = (Direct.name, Probe.name, report.OURS)
        measured = [(t, c) for t, c in self.targets if t.name in kept]
        if not self.plan.awake or not measured:
            return
        why_not = awake.unavailable()
        if why_not is not None:
            self.record.notes.append(f"CPUs could not be kept awake: {why_not}")
            return
        with awake.cpus_kept_awake():
            for scenario in self.plan.awake:
                for target, child in measured:
                    if child is not None and not child.alive():
                        self._note_dead(target, child)
                        continue
                    row = measure.measure(scenario, target, child, self.plan.settings, self.meter)
                    self.record.awake.append(row)
                    log("awake " + _progress(row))

    def _note_dead(self, target: Target, child: procs.Child) -> None:
        note = f"{target.name} exited during the run; its log ends:\n{child.tail(5)}"
        if note not in self.record.notes:
            self.record.notes.append(note)

    def _run_memory(self) -> None:
        for index, (target, child) in enumerate(self.targets):
            if child is None or not child.alive():
                continue
            # Each gateway in a fresh process: what the load scenarios before left in its heap
            # would otherwise count as the memory of these streams, and differ with the set
            # of scenarios run.
            child.stop()
            child = target.start(self.run_dir, self.plan.gateway_cpus)
            assert child is not None
            self.children.append(child)
            self.meter.roots.append(child.pid)
            procs.wait_port(child, target.port, _START_TIMEOUT)
            self.targets[index] = (target, child)
            soak = self.plan.soak and target.name == report.OURS
            row = memory.measure_memory(target, child, self.plan.hold, soak)
            self.record.memory.append(row)
            log(f"memory {target.name}: {row.peak_mb} MB peak, soak {row.soak[-1:]} ")

    def _run_profiles(self) -> None:
        spy = self.tools["py-spy"]
        ours = next(((t, c) for t, c in self.targets if t.name == report.OURS), None)
        if not self.plan.profile or not spy.ok or ours is None or ours[1] is None:
            return
        for scenario in to_profile(self.plan, self.record.rows):
            profile = self._profile(spy.command[0], scenario, ours[0], ours[1])
            if profile is not None:
                self.record.profiles.append(profile)

    def _profile(
        self, py_spy: str, scenario: scenarios.Scenario, target: Target, child: procs.Child
    ) -> profiling.Profile | None:
        seconds = self.plan.settings.duration
        out = self.run_dir / f"profile-{scenario.name.replace('/', '_')}.txt"
        recorder = profiling.start_recording(py_spy, child.pid, seconds, out)
        try:
            measure.run_load(scenario, target, self.plan.settings, seconds)
            recorder.wait(seconds + 30)
        finally:
            if recorder.poll() is None:
                recorder.kill()
                recorder.wait(5)
        return profiling.summarize(scenario.name, out.read_text()) if out.exists() else None


def to_profile(plan: Plan, rows: list[measure.Row]) -> list[scenarios.Scenario]:
    """The scenarios to profile: in a full run the key ones and those whose target `rows`
    (compared with DIRECT) missed, so that the results say where a miss's time goes; in a run
    of chosen ones, each."""
    if plan.chosen:
        return list(plan.matrix)
    checks = report.checks(rows, [])
    missed = {check.scenario for check in checks if check.judged and not check.met}
    return [s for s in plan.matrix if s.name in _PROFILED or s.name in missed]


_PROFILED = (
    "zero/json/openai/c64",
    "zero/json/anthropic/c64",
    "zero/stream/openai/c64",
    "zero/stream/anthropic/c64",
    "realistic/stream/openai/c256",
)


def _new_run_dir() -> Path:
    """A fresh folder for this run's configs and logs; only the newest few are kept."""
    runs = install.CACHE / "runs"
    runs.mkdir(parents=True, exist_ok=True)
    for old in sorted(runs.iterdir())[:-_KEEP_RUNS]:
        shutil.rmtree(old, ignore_errors=True)
    return Path(tempfile.mkdtemp(prefix=time.strftime("%Y%m%d-%H%M%S-"), dir=runs))


def _claim(port: int) -> None:
    if not procs.port_free(port):
        raise procs.ProcessFailed(
            f"port {port} is in use: is another bench running?"
            " (MG_BENCH_PORT_OFFSET moves all ports)"
        )


def _repo() -> Path:
    return Path(__file__).resolve().parent.parent


def _layout(plan: Plan) -> str:
    if plan.gateway_cpus is None:
        return "no CPU pinning"
    return (
        f"gateways (messagegate, LiteLLM, ccr) pinned to CPU {plan.gateway_cpus} with taskset; "
        f"fake upstreams, wrk and the asyncio client pinned to CPU {plan.settings.load_cpus}; "
        "every request and stream over loopback"
    )


def _progress(row: measure.Row) -> str:
    cpu = f"{row.cpu_ms:.3f} ms CPU/req" if row.cpu_ms is not None else ""
    ttft = f"ttft {row.ttft_p50_ms:.2f} ms" if row.ttft_p50_ms is not None else ""
    return (
        f"{row.scenario:28} {row.target:12} {row.rps:9,.0f} req/s  p50 {row.p50_ms:7.2f} ms  "
        f"p99 {row.p99_ms:7.2f} ms  {ttft}  {cpu}  errors {row.errors}  noise {row.noise_cores:.2f}"
    )


def gather_tools(args: argparse.Namespace, competitors: bool) -> dict[str, Tool]:
    tools = {
        "wrk": install.wrk() if args.loadgen == "wrk" else Tool("wrk", missing="not asked for")
    }
    if competitors:
        tools["litellm"] = install.litellm()
        tools["ccr"] = install.ccr()
    tools["py-spy"] = install.py_spy() if args.profile else Tool("py-spy", missing="not asked for")
    return tools


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = _parser().parse_args(argv)
    _exit_on_sigterm()
    competitors = args.competitors if args.competitors is not None else not args.quick
    tools = gather_tools(args, competitors)
    inside = bool(os.environ.get(_IN_NETNS))
    if not inside and (args.netns == "on" or (args.netns == "auto" and netns_available())):
        return rerun_in_netns(argv)
    the_plan = plan(args, tools["wrk"])
    run = Bench(the_plan, tools, argv).run()
    print(record.to_markdown(run))
    if args.json is not None:
        args.json.write_text(record.to_json(run))
    if the_plan.results is not None:
        record.write_results(the_plan.results, run)
        log(f"bench: wrote {the_plan.results}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
