"""What auth, limits and the ledger cost the gateway's zero-latency throughput: a key in the
config (no limits, no ledger) and a stored key (rpm, tpm and a budget, each checked; every answer
journalled and shipped to SQLite), alternately in one run (config, stored, config, stored, ...).

The gateway runs on CPU 0, the fake upstream and the load on CPU 1 (as `bench.run` pins them).
Each round reports requests per second and the gateway's CPU time per request (user + system,
all its threads: the ledger's shipping included).

    python -m bench.accounting_cost [--rounds 3] [--duration 5] [--concurrency 64]
    python -m bench.accounting_cost --windows 20   # both up at once, 2 s windows in turn
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from bench.instructions import GATEWAY_KEY, ROOT, free_port, gateway_config, stored_key
from bench.interleaved import Gateway, Windows, measure
from bench.pinned_round import compare, load_round
from bench.pinning import Load

SETUPS = ("config-key", "stored-key")


def gateway(work: Path, setup: str, upstream_port: int) -> Gateway:
    """A gateway of `setup`, its files in `work`."""
    port = free_port()
    work.mkdir(parents=True)
    config = work / "gateway.json"
    config.write_text(gateway_config(upstream_port, port, None, None, setup, work))
    key = stored_key(ROOT / "src", config) if setup == "stored-key" else GATEWAY_KEY
    # HOME in the run's directory: no database of the user's is taken up.
    environment = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT / "src"), "HOME": str(work)}
    return Gateway(setup, config, port, key, environment)


def round_trip(work: Path, setup: str, load: Load) -> tuple[float, float]:
    """(requests per second, gateway CPU milliseconds per request) of one gateway run."""
    upstream_port = free_port()
    g = gateway(work, setup, upstream_port)
    return load_round(work, g.config, g.key, g.environment, (upstream_port, g.port), load)


def interleave(work: Path, load: Load, windows: int) -> list[Windows]:
    upstream_port = free_port()
    gateways = [gateway(work / setup, setup, upstream_port) for setup in SETUPS]
    return measure(work, upstream_port, gateways, load, windows)


def main(argv: Sequence[str] | None = None) -> int:
    return compare(
        argv,
        "python -m bench.accounting_cost",
        __doc__,
        "anthropic-json",
        SETUPS,
        lambda work, n, setup, load: round_trip(work / f"{setup}-{n}", setup, load),
        interleave,
    )


if __name__ == "__main__":
    raise SystemExit(main())
