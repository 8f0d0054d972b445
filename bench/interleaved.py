"""Two gateways measured in short windows taken in turn while both run, for a VM whose speed
drifts by tens of percent within a minute (rounds that start a gateway each are ~10 s apart;
adjacent windows here are a few seconds apart, in ABBA order so that a steady drift cancels).

Both gateways are pinned to CPU 0 (the upstream, any helper and the load to CPU 1). A window
counts the answers its gateway gave, and the CPU time (user + system, all its threads) it used
from the window's start to its next window's warm-up: work a gateway defers past its window (the
ledger's next shipping tick) is its own, and what the idle one does meanwhile is charged to it,
not to the one under load. At zero latency a gateway is CPU-bound on its one core, so its
throughput is the inverse of its CPU time per request: the change reported is the median over
window pairs of B's CPU per request against A's, and what that makes of throughput."""

from __future__ import annotations

import asyncio
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import uvloop

from bench import procs
from bench.client import JSON_ANSWER, run_load
from bench.pinning import Load, load_request, start_gateway, start_helper

# Each gateway's last window is closed this long after it ends: like the others, it then holds
# one of the ledger's shipping ticks (1 s) at least.
SETTLE_SECONDS = 1.2


@dataclass(frozen=True, slots=True)
class Gateway:
    """A gateway to start: its config file, its port, the key its load presents, its
    environment."""

    label: str
    config: Path
    port: int
    key: str
    environment: Mapping[str, str]


@dataclass(slots=True)
class Windows:
    """A gateway's windows: answers and seconds of each, and the CPU seconds charged to it."""

    answers: list[int] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)

    def close(self, opened: float | None, now: float) -> None:
        """Charge the window opened at CPU time `opened` (None: none yet) with what the gateway
        used since."""
        if opened is not None:
            self.cpu.append(now - opened)

    def cpu_ms(self, n: int) -> float:
        return self.cpu[n] * 1000 / self.answers[n]

    def rps(self, n: int) -> float:
        return self.answers[n] / self.seconds[n]


def measure(
    work: Path,
    upstream_port: int,
    gateways: Sequence[Gateway],
    load: Load,
    windows: int,
    helpers: Sequence[tuple[procs.Child, int]] = (),
) -> list[Windows]:
    """`windows` windows of each gateway (`load.duration` seconds each, after `load.warmup`),
    in ABBA order; each gateway's windows, in `gateways`' order."""
    upstream = start_helper("upstream", ["bench.fake_upstream", "--port", str(upstream_port)], work)
    started: list[procs.Child] = []
    try:
        for gateway in gateways:
            started.append(
                start_gateway(f"gateway-{gateway.label}", gateway.config, gateway.environment, work)
            )
        for child, port in (
            (upstream, upstream_port),
            *helpers,
            *zip(started, (g.port for g in gateways), strict=True),
        ):
            procs.wait_port(child, port, 60)
        requests = [load_request(load.scenario, g.port, g.key) for g in gateways]
        results = [Windows() for _ in gateways]
        # Where each gateway's charged CPU time starts: its window's opening.
        opened: list[float | None] = [None] * len(gateways)
        order = list(range(len(gateways)))
        for n in range(windows + 1):
            for i in order if n % 2 == 0 else order[::-1]:
                child = started[i]
                if n == windows:
                    # The last pass only closes each gateway's last window, once it has settled.
                    uvloop.run(asyncio.sleep(SETTLE_SECONDS))
                    results[i].close(opened[i], procs.cpu_seconds([child.pid]))
                    continue
                # The window before ends as this one's warm-up starts.
                results[i].close(opened[i], procs.cpu_seconds([child.pid]))
                marks: list[float] = []

                def window(child: procs.Child = child, marks: list[float] = marks) -> None:
                    marks.append(procs.cpu_seconds([child.pid]))

                tally = uvloop.run(
                    run_load(gateways[i].port, requests[i], JSON_ANSWER,
                             concurrency=load.concurrency, duration=load.duration,
                             warmup=load.warmup, on_window=window)
                )  # fmt: skip
                if tally.errors or not tally.ok:
                    raise RuntimeError(
                        f"{gateways[i].label}: {tally.errors} errors, {tally.ok} answers:\n"
                        f"{child.tail()}"
                    )
                opened[i] = marks[0]
                results[i].answers.append(tally.ok)
                results[i].seconds.append(tally.elapsed)
        return results
    finally:
        for child in started:
            child.stop()
        upstream.stop()


def report(labels: tuple[str, str], results: list[Windows]) -> None:
    """Each window pair, then the medians and B's change against A."""
    before, after = results
    pairs = len(after.cpu)
    for n in range(pairs):
        print(
            f"window {n + 1:>3}: {labels[0]} {before.rps(n):8,.0f} req/s {before.cpu_ms(n):.4f} ms"
            f"  {labels[1]} {after.rps(n):8,.0f} req/s {after.cpu_ms(n):.4f} ms"
            f"  ({after.cpu_ms(n) / before.cpu_ms(n) - 1:+.1%} CPU)"
        )
    ratios = [after.cpu_ms(n) / before.cpu_ms(n) for n in range(pairs)]
    ratio = statistics.median(ratios)
    cpu_before = statistics.median(before.cpu_ms(n) for n in range(pairs))
    cpu_after = statistics.median(after.cpu_ms(n) for n in range(pairs))
    quartiles = statistics.quantiles(ratios, n=4) if pairs >= 2 else [ratio, ratio, ratio]
    # Requests per second as measured: each window's also pays for what the other gateway
    # does meanwhile on the same core (its deferred work), so CPU per request is the figure.
    rps_ratio = statistics.median(after.rps(n) / before.rps(n) for n in range(pairs))
    print(
        f"median of {pairs} window pairs: CPU per request {ratio - 1:+.1%} "
        f"(quartiles {quartiles[0] - 1:+.1%} to {quartiles[2] - 1:+.1%}; medians "
        f"{cpu_before:.4f} -> {cpu_after:.4f} ms, {cpu_after - cpu_before:+.4f} ms); "
        f"throughput at one core {1 / ratio - 1:+.1%} (requests per second as measured "
        f"{rps_ratio - 1:+.1%})"
    )
