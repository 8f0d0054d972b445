"""One round of zero-latency load on a gateway pinned to CPU 0, with the fake upstream, any helper
(an OTLP sink) and the load on CPU 1, as `bench.run` pins them: its requests per second and its
CPU time per request (user + system, all its threads)."""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import uvloop

from bench import procs
from bench.client import JSON_ANSWER, run_load
from bench.interleaved import Windows, report
from bench.pinning import Load, load_request, start_gateway, start_helper

# Seconds measured in a round (a gateway started for it), and in an interleaved window.
ROUND_SECONDS, WINDOW_SECONDS = 5.0, 2.0


def load_round(
    work: Path,
    config: Path,
    key: str,
    environment: Mapping[str, str],
    ports: tuple[int, int],
    load: Load,
    helpers: Sequence[tuple[procs.Child, int]] = (),
) -> tuple[float, float]:
    """(requests per second, gateway CPU milliseconds per request): the fake upstream on
    `ports[0]`, the gateway serving `config` on `ports[1]`; `helpers` (started, with their port)
    are waited for too, and left to the caller to stop."""
    upstream_port, gateway_port = ports
    upstream = start_helper("upstream", ["bench.fake_upstream", "--port", str(upstream_port)], work)
    gateway = start_gateway("gateway", config, environment, work)
    try:
        for child, port in ((upstream, upstream_port), *helpers, (gateway, gateway_port)):
            procs.wait_port(child, port, 60)
        request = load_request(load.scenario, gateway_port, key)
        marks: list[float] = []

        def window() -> None:
            marks.append(procs.cpu_seconds([gateway.pid]))

        tally = uvloop.run(
            run_load(gateway_port, request, JSON_ANSWER, concurrency=load.concurrency,
                     duration=load.duration, warmup=load.warmup, on_window=window)
        )  # fmt: skip
        used = procs.cpu_seconds([gateway.pid]) - marks[0]
        if tally.errors or not tally.ok:
            raise RuntimeError(f"{tally.errors} errors, {tally.ok} answers:\n{gateway.tail()}")
        return tally.ok / tally.elapsed, used * 1000 / tally.ok
    finally:
        gateway.stop()
        upstream.stop()


def compare(
    argv: Sequence[str] | None,
    prog: str,
    description: str | None,
    scenario: str,
    labels: tuple[str, str],
    run: Callable[[Path, int, str, Load], tuple[float, float]],
    interleave: Callable[[Path, Load, int], list[Windows]],
) -> int:
    """A bench's command line: rounds of two gateways in turn (`run(work, round, label, load)`,
    `work` a temporary directory of the whole run), then their medians (`alternate`); or, with
    `--windows N`, both gateways up at once and N windows of each taken in turn
    (`interleave(work, load, windows)`, `bench.interleaved`)."""
    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--windows",
        type=int,
        default=0,
        help="both gateways up at once, N windows of each in turn (default: --rounds rounds)",
    )
    parser.add_argument("--duration", type=float, default=None, help="seconds a round or window")
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--scenario", choices=["openai-json", "anthropic-json"], default=scenario)
    args = parser.parse_args(argv)
    duration = args.duration or (WINDOW_SECONDS if args.windows else ROUND_SECONDS)
    load = Load(args.scenario, args.concurrency, duration, args.warmup)
    with tempfile.TemporaryDirectory(prefix="mg-compare-") as work:
        if args.windows:
            report(labels, interleave(Path(work), load, args.windows))
        else:
            alternate(args.rounds, labels, lambda n, label: run(Path(work), n, label, load))
    return 0


def alternate(
    rounds: int, labels: tuple[str, str], run: Callable[[int, str], tuple[float, float]]
) -> None:
    """`rounds` rounds of the two gateways in turn (`run(round, label)`), each printed, then
    their medians and the second's change against the first."""
    rows: dict[str, list[tuple[float, float]]] = {label: [] for label in labels}
    for n in range(rounds):
        for label in labels:
            rps, cpu_ms = run(n, label)
            rows[label].append((rps, cpu_ms))
            print(f"round {n + 1} {label:>12}: {rps:8,.0f} req/s {cpu_ms:.4f} ms CPU/request")
    summary = {
        label: {
            "req_per_s": statistics.median(v[0] for v in values),
            "cpu_ms_per_request": statistics.median(v[1] for v in values),
        }
        for label, values in rows.items()
    }
    before, after = (summary[label] for label in labels)
    print(json.dumps(summary))
    print(
        f"median: {before['req_per_s']:,.0f} -> {after['req_per_s']:,.0f} req/s "
        f"({after['req_per_s'] / before['req_per_s'] - 1:+.1%}); "
        f"{before['cpu_ms_per_request']:.4f} -> {after['cpu_ms_per_request']:.4f} ms CPU/request "
        f"({after['cpu_ms_per_request'] - before['cpu_ms_per_request']:+.4f} ms, "
        f"{after['cpu_ms_per_request'] / before['cpu_ms_per_request'] - 1:+.1%})"
    )
