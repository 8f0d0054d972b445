"""Instructions per request of the gateway at several git revisions, measured in one run.

Each revision's ``src/`` runs under ``valgrind --tool=callgrind`` (user space only, the same
interpreter and libraries for all), against the bench's fake upstream; after a warm-up the counters
are zeroed, a fixed number of sequential requests is sent, and the counters are dumped. The counts
repeat to within ~0.2% for JSON answers, whatever else the machine is doing, so a change's cost is
the difference between two revisions of the same run (DEVELOPERS.md's method, as a command).

    python -m bench.instructions --rev HEAD~3 --rev WORKTREE [--requests 500] [--scenario ...]
        [--key-settings '{"rpm": 100000, "budget": 1000}'] [--config-extra '{"database": "..."}']
        [--setup open|config-key|stored-key ...] [--minus-idle] [--otel]

``--setup`` (repeatable) measures the gateway as configured in other ways, each against the same
revisions: ``config-key`` (the default: a key in the config file), ``open`` (no key, no database)
and ``stored-key`` (a key created with ``messagegate keys create`` in a database, with rpm, tpm and
a budget, every answer journalled to the ledger): what auth, limits and the ledger cost together is
``--setup open --setup stored-key --minus-idle`` (the key refresh and the shipper run on timers,
whose share callgrind's slowness inflates: ``--minus-idle`` takes off what they cost idle).

``--otel`` turns traces on (every request sampled) with a loopback OTLP sink beside the
upstream; spans leave in batches of `--requests` (two spans a request), so the measured window
holds the encoding and sending of exactly its own requests' spans.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import math
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from bench import procs
from bench.otlp_sink import answered

ROOT = Path(__file__).resolve().parents[1]
WORKTREE = "WORKTREE"
GATEWAY_KEY = "mg-bench-instructions"
_TOTALS = re.compile(rb"^(?:summary|totals):\s*(\d+)", re.MULTILINE)


@dataclass(frozen=True, slots=True)
class Scenario:
    model: str
    stream: bool


# The key `stored-key` creates: limits high enough never to refuse, but each checked per request.
STORED_KEY_SETTINGS = ("--rpm", "100000000", "--tpm", "1000000000", "--budget", "1000000")
# USD per million tokens: what a budget charges (every setup prices its routes alike).
PRICE = {"input": 3, "output": 15}
SETUPS = ("config-key", "open", "stored-key")

SCENARIOS = {
    "openai-json": Scenario("bench-openai", False),
    "anthropic-json": Scenario("bench-anthropic", False),
    "openai-stream": Scenario("bench-openai", True),
    "anthropic-stream": Scenario("bench-anthropic", True),
}


def gateway_config(
    upstream_port: int,
    gateway_port: int,
    key_settings: dict[str, object] | None = None,
    extra: dict[str, object] | None = None,
    setup: str = "config-key",
    work: Path | None = None,
) -> str:
    """`key_settings` go into the bench key's entry (limits, say, for revisions that have them),
    `extra` into the top level (a `database:`). `open` has no key; `stored-key` has none in the
    file but a database in `work`, where its key is created."""
    upstream = f"http://127.0.0.1:{upstream_port}"
    keys = [{"key": GATEWAY_KEY, "name": "bench", **(key_settings or {})}]
    stored = {"database": str((work or Path(".")) / "ledger.db")} if setup == "stored-key" else {}
    return json.dumps(
        (extra or {})
        | stored
        | {
            "listen": f"127.0.0.1:{gateway_port}",
            "keys": keys if setup == "config-key" else [],
            "providers": {
                "oai": {"kind": "openai", "base_url": upstream + "/v1", "api_key": "sk-x"},
                "anth": {"kind": "anthropic", "base_url": upstream, "api_key": "sk-y"},
            },
            "models": {
                "bench-openai": {"routes": [_route("oai", "m-openai")]},
                "bench-anthropic": {"routes": [_route("anth", "m-anthropic")]},
            },
        }
    )


def _route(provider: str, model: str) -> dict[str, object]:
    return {"provider": provider, "model": model, "price": PRICE}


def stored_key(src: Path, config: Path) -> str:
    """Creates the `stored-key` setup's key with the revision's own CLI; its secret."""
    create = ["keys", "create", "--config", str(config), "--name", "bench", "--json"]
    created = subprocess.run(
        [sys.executable, "-m", "messagegate.cli", *create, *STORED_KEY_SETTINGS],
        env=_env(src, config.parent),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if created.returncode != 0:
        raise RuntimeError(f"messagegate keys create failed: {created.stderr.strip()}")
    secret: str = json.loads(created.stdout)["key"]
    return secret


@contextlib.contextmanager
def source_tree(rev: str) -> Iterator[Path]:
    """The `src/` of a revision: the working tree's own, or a temporary checkout."""
    if rev == WORKTREE:
        yield ROOT / "src"
        return
    with tempfile.TemporaryDirectory(prefix="mg-rev-") as tmp:
        checkout = Path(tmp) / "tree"
        subprocess.run(
            ["git", "worktree", "add", "--detach", "--quiet", str(checkout), rev],
            cwd=ROOT,
            check=True,
        )
        try:
            yield checkout / "src"
        finally:
            subprocess.run(
                ["git", "worktree", "remove", "--force", str(checkout)], cwd=ROOT, check=False
            )


def send(port: int, scenario: Scenario, count: int, key: str = GATEWAY_KEY) -> None:
    """`count` sequential requests on one keep-alive connection; each must succeed."""
    body = json.dumps(
        {
            "model": scenario.model,
            "max_tokens": 64,
            "stream": scenario.stream,
            "messages": [{"role": "user", "content": "Say hello in a few words."}],
        }
    )
    headers = {"content-type": "application/json", "x-api-key": key}
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        for _ in range(count):
            connection.request("POST", "/v1/messages", body, headers)
            response = connection.getresponse()
            payload = response.read()
            if response.status != 200:
                raise RuntimeError(f"gateway answered {response.status}: {payload[:300]!r}")
    finally:
        connection.close()


def measure(
    src: Path,
    scenario: Scenario,
    requests: int,
    warmup: int,
    work: Path,
    key_settings: dict[str, object] | None = None,
    extra: dict[str, object] | None = None,
    setup: str = "config-key",
    minus_idle: bool = False,
    otel: bool = False,
) -> float:
    """Instructions per request; `minus_idle` subtracts what the gateway's timers (key refresh,
    ledger shipping) cost while it is idle for as long as the requests took: under callgrind,
    wall time, and with it their share, is stretched ~50x over what it is on a real CPU."""
    upstream_port, gateway_port, sink_port = free_port(), free_port(), free_port()
    config = work / "gateway.json"
    if otel:
        extra = (extra or {}) | {"otel": {"enabled": True}}
    config.write_text(gateway_config(upstream_port, gateway_port, key_settings, extra, setup, work))
    key = stored_key(src, config) if setup == "stored-key" else GATEWAY_KEY
    out = work / "callgrind.out"
    upstream = procs.start(
        "upstream",
        [sys.executable, "-m", "bench.fake_upstream", "--port", str(upstream_port)],
        work,
        cwd=ROOT,
    )
    sink = procs.start(
        "otlp-sink",
        [sys.executable, "-m", "bench.otlp_sink", "--port", str(sink_port)],
        work,
        cwd=ROOT,
    )
    environment = _env(src, work)
    if otel:
        environment |= {
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": f"http://127.0.0.1:{sink_port}/v1/traces",
            "OTEL_TRACES_SAMPLER": "always_on",
            # The warm-up's spans and the measured ones leave in whole batches of their own.
            "OTEL_BSP_MAX_EXPORT_BATCH_SIZE": str(2 * math.gcd(requests, warmup)),
            "OTEL_BSP_MAX_QUEUE_SIZE": str(4 * (requests + warmup)),
        }
    gateway = procs.start(
        "gateway",
        [
            "valgrind",
            "--tool=callgrind",
            f"--callgrind-out-file={out}",
            sys.executable,
            "-m",
            "messagegate.cli",
            "serve",
            "--config",
            str(config),
            "--log-level",
            "warning",
        ],
        work,
        env=environment,
    )
    try:
        procs.wait_port(upstream, upstream_port, 30)
        procs.wait_port(sink, sink_port, 30)
        procs.wait_port(gateway, gateway_port, 300)
        settle = 2.0 if otel else 0.2
        send(gateway_port, scenario, warmup, key)
        control(gateway.pid, "-z", settle)
        started = time.monotonic()
        send(gateway_port, scenario, requests, key)
        busy_seconds = time.monotonic() - started
        control(gateway.pid, "-d", settle)
        busy = instructions(out)
        if minus_idle:
            control(gateway.pid, "-z", settle)
            time.sleep(busy_seconds)
            control(gateway.pid, "-d", settle)
            busy -= instructions(out, newer_than=busy)
    finally:
        gateway.stop()
        sink.stop()
        upstream.stop()
    if otel and not answered(sink.log)[0]:
        raise RuntimeError("the OTLP sink answered no export: the run measured failing ones")
    return busy / requests


def control(pid: int, flag: str, settle: float = 0.2) -> None:
    """`settle`: how long before the command (a batch of spans under way ends first) and after."""
    time.sleep(settle)
    subprocess.run(["callgrind_control", flag, str(pid)], check=True, capture_output=True)
    time.sleep(0.2)


def instructions(out: Path, newer_than: int | None = None) -> int:
    """The instruction total of the newest dump (the one after the zeroing); with `newer_than`
    (the total read before), of a dump other than the one holding that total."""
    dumps = sorted(out.parent.glob(out.name + "*"), key=lambda p: p.stat().st_mtime)
    for dump in reversed(dumps):
        match = _TOTALS.search(dump.read_bytes())
        if match and int(match.group(1)) > 0 and int(match.group(1)) != newer_than:
            return int(match.group(1))
    raise RuntimeError(f"no callgrind dump with a total under {out.parent}")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _env(src: Path, work: Path) -> dict[str, str]:
    """The revision's code; HOME in the measurement's directory, so that no database of the
    user's (the default path under HOME) is taken up."""
    return {"PYTHONPATH": str(src), "PATH": _path(), "HOME": str(work)}


def _path() -> str:
    return os.environ.get("PATH", "/usr/bin:/bin")


def column_name(rev: str, setup: str, revs: list[str], setups: list[str]) -> str:
    """A measurement's column: its revision, its setup, or both when both vary."""
    return " ".join(part for part, every in ((rev, revs), (setup, setups)) if len(every) > 1) or rev


def print_table(rows: dict[str, dict[str, float]], labels: list[str]) -> None:
    base = labels[0]
    print("\n| scenario | " + " | ".join(labels) + f" | last / {base} |")
    print("|---|" + "---:|" * (len(labels) + 1))
    for name, by_label in rows.items():
        cells = " | ".join(f"{by_label[label]:,.0f}" for label in labels)
        print(f"| {name} | {cells} | {by_label[labels[-1]] / by_label[base]:.4f}x |")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.instructions", description=__doc__)
    parser.add_argument("--rev", action="append", help=f"a git revision or {WORKTREE} (repeat)")
    parser.add_argument("--scenario", action="append", choices=sorted(SCENARIOS))
    parser.add_argument(
        "--setup", action="append", choices=SETUPS, help="how the gateway is configured (repeat)"
    )
    parser.add_argument(
        "--minus-idle",
        action="store_true",
        help="subtract what the idle gateway costs over as long as the requests took",
    )
    parser.add_argument("--requests", type=int, default=500)
    parser.add_argument("--warmup", type=int, default=200)
    parser.add_argument(
        "--key-settings", type=json.loads, help="JSON settings for the bench key (its limits)"
    )
    parser.add_argument(
        "--config-extra", type=json.loads, help="JSON merged into the config's top level"
    )
    parser.add_argument(
        "--otel", action="store_true", help="traces on, every request sampled, to a loopback sink"
    )
    args = parser.parse_args(argv)
    if shutil.which("valgrind") is None or shutil.which("callgrind_control") is None:
        print("valgrind (Debian's valgrind package) is needed", file=sys.stderr)
        return 2
    revs = args.rev or ["HEAD", WORKTREE]
    setups = args.setup or ["config-key"]
    labels = [column_name(rev, setup, revs, setups) for rev in revs for setup in setups]
    rows: dict[str, dict[str, float]] = {}
    for rev in revs:
        with source_tree(rev) as src:
            for setup in setups:
                label = column_name(rev, setup, revs, setups)
                for name in args.scenario or ["openai-json", "anthropic-json"]:
                    with tempfile.TemporaryDirectory(prefix="mg-cg-") as work:
                        per_request = measure(
                            src,
                            SCENARIOS[name],
                            args.requests,
                            args.warmup,
                            Path(work),
                            args.key_settings,
                            args.config_extra,
                            setup,
                            args.minus_idle,
                            args.otel,
                        )
                    rows.setdefault(name, {})[label] = per_request
                    print(f"{label:>24} {name:<17} {per_request:>12,.0f} instructions/request")
    print_table(rows, labels)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
