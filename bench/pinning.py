"""Where the benches' processes run: the gateway on CPU 0, everything else on CPU 1; and the load
they put on it, and the request it sends."""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from bench import procs
from bench.body import anthropic_body, encode
from bench.client import encode_request
from bench.instructions import ROOT, SCENARIOS

GATEWAY_CPU, OTHERS_CPU = "0", "1"


@dataclass(frozen=True, slots=True)
class Load:
    scenario: str
    concurrency: int
    duration: float
    warmup: float


def start_helper(name: str, module: Sequence[str], work: Path) -> procs.Child:
    """A bench process (`python -m ...`) on the CPU the gateway does not use."""
    return procs.start(name, [sys.executable, "-m", *module], work, cpus=OTHERS_CPU, cwd=ROOT)


def start_gateway(
    name: str, config: Path, environment: Mapping[str, str], work: Path
) -> procs.Child:
    """`messagegate serve` of `config`, on the gateway's CPU."""
    serve = ["messagegate.cli", "serve", "--config", str(config), "--log-level", "warning"]
    return procs.start(
        name, [sys.executable, "-m", *serve], work, cpus=GATEWAY_CPU, env=dict(environment)
    )


def load_request(scenario: str, port: int, key: str) -> bytes:
    """The request the load sends, again and again, to the gateway on `port` with `key`."""
    body = anthropic_body(SCENARIOS[scenario].model, SCENARIOS[scenario].stream)
    headers = {"x-api-key": key, "anthropic-version": "2023-06-01"}
    return encode_request("127.0.0.1", port, "/v1/messages", encode(body), headers)
