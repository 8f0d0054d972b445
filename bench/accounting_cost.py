"""What auth, limits and the ledger cost the gateway's zero-latency throughput: a key in the
config (no limits, no ledger) and a stored key (rpm, tpm and a budget, each checked; every answer
journalled and shipped to SQLite), alternately in one run (config, stored, config, stored, ...).

The gateway runs on CPU 0, the fake upstream and the load on CPU 1 (as `bench.run` pins them).
Each round reports requests per second and the gateway's CPU time per request (user + system,
all its threads: the ledger's shipping included).

    python -m bench.accounting_cost [--rounds 3] [--duration 5] [--concurrency 64]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

import uvloop

from bench import procs
from bench.body import anthropic_body, encode
from bench.client import JSON_ANSWER, run_load
from bench.client import encode_request as encoded
from bench.instructions import GATEWAY_KEY, ROOT, SCENARIOS, free_port, gateway_config, stored_key

_GATEWAY_CPU, _OTHERS_CPU = "0", "1"
SETUPS = ("config-key", "stored-key")


def round_trip(
    work: Path, setup: str, scenario: str, concurrency: int, duration: float, warmup: float
) -> tuple[float, float]:
    """(requests per second, gateway CPU milliseconds per request) of one gateway run."""
    upstream_port, gateway_port = free_port(), free_port()
    work.mkdir(parents=True)
    config = work / "gateway.json"
    config.write_text(gateway_config(upstream_port, gateway_port, None, None, setup, work))
    key = stored_key(ROOT / "src", config) if setup == "stored-key" else GATEWAY_KEY
    # HOME in the run's directory: no database of the user's is taken up.
    environment = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT / "src"), "HOME": str(work)}
    python = sys.executable
    upstream = procs.start(
        "upstream", [python, "-m", "bench.fake_upstream", "--port", str(upstream_port)], work,
        cpus=_OTHERS_CPU, cwd=ROOT,
    )  # fmt: skip
    serve = ["messagegate.cli", "serve", "--config", str(config), "--log-level", "warning"]
    gateway = procs.start(
        "gateway", [python, "-m", *serve], work, cpus=_GATEWAY_CPU, env=environment
    )
    try:
        for child, port in ((upstream, upstream_port), (gateway, gateway_port)):
            procs.wait_port(child, port, 60)
        body = anthropic_body(SCENARIOS[scenario].model, SCENARIOS[scenario].stream)
        headers = {"x-api-key": key, "anthropic-version": "2023-06-01"}
        request = encoded("127.0.0.1", gateway_port, "/v1/messages", encode(body), headers)
        marks: list[float] = []

        def window() -> None:
            marks.append(procs.cpu_seconds([gateway.pid]))

        tally = uvloop.run(
            run_load(gateway_port, request, JSON_ANSWER, concurrency=concurrency,
                     duration=duration, warmup=warmup, on_window=window)
        )  # fmt: skip
        used = procs.cpu_seconds([gateway.pid]) - marks[0]
        if tally.errors or not tally.ok:
            raise RuntimeError(f"{tally.errors} errors, {tally.ok} answers:\n{gateway.tail()}")
        return tally.ok / tally.elapsed, used * 1000 / tally.ok
    finally:
        gateway.stop()
        upstream.stop()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.accounting_cost", description=__doc__)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument(
        "--scenario", choices=["openai-json", "anthropic-json"], default="anthropic-json"
    )
    args = parser.parse_args(argv)
    rows: dict[str, list[tuple[float, float]]] = {setup: [] for setup in SETUPS}
    with tempfile.TemporaryDirectory(prefix="mg-accounting-") as work:
        for n in range(args.rounds):
            for setup in SETUPS:
                rps, cpu_ms = round_trip(
                    Path(work) / f"{setup}-{n}",
                    setup,
                    args.scenario,
                    args.concurrency,
                    args.duration,
                    args.warmup,
                )
                rows[setup].append((rps, cpu_ms))
                print(f"round {n + 1} {setup:>10}: {rps:8,.0f} req/s {cpu_ms:.4f} ms CPU/request")
    summary = {
        setup: {
            "req_per_s": statistics.median(v[0] for v in values),
            "cpu_ms_per_request": statistics.median(v[1] for v in values),
        }
        for setup, values in rows.items()
    }
    before, after = summary["config-key"], summary["stored-key"]
    print(json.dumps(summary))
    print(
        f"median: {before['req_per_s']:,.0f} -> {after['req_per_s']:,.0f} req/s "
        f"({after['req_per_s'] / before['req_per_s'] - 1:+.1%}); "
        f"{before['cpu_ms_per_request']:.4f} -> {after['cpu_ms_per_request']:.4f} ms CPU/request "
        f"({after['cpu_ms_per_request'] - before['cpu_ms_per_request']:+.4f} ms)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
