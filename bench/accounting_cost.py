"""What auth, limits and the ledger cost the gateway's zero-latency throughput: a key in the
config (no limits, no ledger) and a stored key (rpm, tpm and a budget, each checked; every answer
journalled and shipped to SQLite), alternately in one run (config, stored, config, stored, ...).

The gateway runs on CPU 0, the fake upstream and the load on CPU 1 (as `bench.run` pins them).
Each round reports requests per second and the gateway's CPU time per request (user + system,
all its threads: the ledger's shipping included).

    python -m bench.accounting_cost [--rounds 3] [--duration 5] [--concurrency 64]
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from bench.instructions import GATEWAY_KEY, ROOT, free_port, gateway_config, stored_key
from bench.pinned_round import Load, compare, load_round

SETUPS = ("config-key", "stored-key")


def round_trip(work: Path, setup: str, load: Load) -> tuple[float, float]:
    """(requests per second, gateway CPU milliseconds per request) of one gateway run."""
    upstream_port, gateway_port = free_port(), free_port()
    work.mkdir(parents=True)
    config = work / "gateway.json"
    config.write_text(gateway_config(upstream_port, gateway_port, None, None, setup, work))
    key = stored_key(ROOT / "src", config) if setup == "stored-key" else GATEWAY_KEY
    # HOME in the run's directory: no database of the user's is taken up.
    environment = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT / "src"), "HOME": str(work)}
    return load_round(work, config, key, environment, (upstream_port, gateway_port), load)


def main(argv: Sequence[str] | None = None) -> int:
    return compare(
        argv,
        "python -m bench.accounting_cost",
        __doc__,
        "anthropic-json",
        SETUPS,
        lambda work, n, setup, load: round_trip(work / f"{setup}-{n}", setup, load),
    )


if __name__ == "__main__":
    raise SystemExit(main())
