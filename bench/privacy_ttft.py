"""Privacy mode's time to first token: Claude Code's first turn streamed at concurrency 1 through
the gateway directly (plaintext) and through ``messagegate proxy`` -> the same gateway (sealed).

python -m bench.privacy_ttft [--seconds 3] [--rounds 5]

One fake upstream (no latency, 20 tokens), one gateway (``privacy: optional``), one proxy, each
its own process; the two paths are measured alternately, in `--rounds` pairs per route: the
median added time and its spread over the pairs. What the proxy
adds is its hop (an HTTP server and client on loopback) plus the crypto on both sides.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path

import orjson
import yaml

from bench import procs
from bench.client import ANTHROPIC_STREAM, encode_request, run_load
from bench.replies import ANTHROPIC_MODEL, OPENAI_MODEL
from messagegate.privacy.keys import rotate

KEY = "mg-bench-key-0123456789"
FIRST_TURN = (
    Path(__file__).resolve().parents[1] / "tests/fixtures/claude-code/messages_first_turn.json"
)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def gateway_config(gateway: int, upstream: int, key_file: Path) -> dict[str, object]:
    base = f"http://127.0.0.1:{upstream}"
    return {
        "listen": f"127.0.0.1:{gateway}",
        "shutdown_grace": 2,
        "keys": [{"key": KEY, "name": "bench"}],
        "providers": {
            "anthropic": {"kind": "anthropic", "base_url": base, "api_key": "sk-fake"},
            "openai": {"kind": "openai", "base_url": base + "/v1", "api_key": "sk-fake"},
        },
        "models": {
            "bench-anthropic": {"routes": [{"provider": "anthropic", "model": ANTHROPIC_MODEL}]},
            "bench-openai": {"routes": [{"provider": "openai", "model": OPENAI_MODEL}]},
        },
        "privacy": {"mode": "optional", "key_file": str(key_file)},
    }


SMALL = {"max_tokens": 100, "messages": [{"role": "user", "content": "Hello"}]}


def request(port: int, route: str, key: bool, small: bool = False) -> bytes:
    base = SMALL if small else orjson.loads(FIRST_TURN.read_bytes())
    body = base | {"model": f"bench-{route}", "stream": True}
    headers = {"anthropic-version": "2023-06-01", **({"x-api-key": KEY} if key else {})}
    return encode_request("127.0.0.1", port, "/v1/messages", orjson.dumps(body), headers)


async def p50_ttft_ms(port: int, raw: bytes, seconds: float) -> tuple[float, int]:
    tally = await run_load(port, raw, ANTHROPIC_STREAM, concurrency=1, duration=seconds, warmup=1)
    if not tally.ttfts or tally.errors or tally.incomplete:
        raise SystemExit(f"port {port}: {tally.errors} errors, {tally.incomplete} incomplete")
    return statistics.median(tally.ttfts) * 1000, len(tally.ttfts)


def cpu_seconds(pid: int) -> float:
    """User and system CPU a process has used so far (/proc/PID/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def measure_route(
    label: str,
    direct_request: bytes,
    proxy_request: bytes,
    gateway: tuple[int, int],
    proxy: tuple[int, int],
    seconds: float,
    rounds: int,
) -> None:
    """`rounds` pairs of measurements, plaintext to the gateway then sealed through the proxy;
    each pair's difference is one sample of what privacy mode adds (the machine's load drifts
    between pairs more than within one)."""
    (gateway_port, gateway_pid), (proxy_port, proxy_pid) = gateway, proxy
    added, plain_ms, sealed_ms = [], [], []
    cpu = {"plain": 0.0, "sealed": 0.0, "proxy": 0.0}
    streams = {"plain": 0, "sealed": 0}
    for _ in range(rounds):
        used = cpu_seconds(gateway_pid)
        direct, count = asyncio.run(p50_ttft_ms(gateway_port, direct_request, seconds))
        cpu["plain"] += cpu_seconds(gateway_pid) - used
        streams["plain"] += count
        used, proxy_used = cpu_seconds(gateway_pid), cpu_seconds(proxy_pid)
        through, count = asyncio.run(p50_ttft_ms(proxy_port, proxy_request, seconds))
        cpu["sealed"] += cpu_seconds(gateway_pid) - used
        cpu["proxy"] += cpu_seconds(proxy_pid) - proxy_used
        streams["sealed"] += count
        plain_ms.append(direct)
        sealed_ms.append(through)
        added.append(through - direct)
    median = statistics.median
    print(
        f"{label:<32} p50 TTFT gateway {median(plain_ms):5.2f} ms, proxy->gateway"
        f" {median(sealed_ms):5.2f} ms: added {median(added):+.2f} ms median of {rounds}"
        f" (spread {min(added):+.2f} .. {max(added):+.2f})"
    )
    per_plain = cpu["plain"] / streams["plain"] * 1000
    per_sealed = cpu["sealed"] / streams["sealed"] * 1000
    print(
        f"{'':<32} CPU per stream: gateway {per_plain:.2f} ms plain, {per_sealed:.2f} ms sealed"
        f" ({per_sealed - per_plain:+.2f}); proxy {cpu['proxy'] / streams['sealed'] * 1000:.2f} ms"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=3.0, help="per measurement")
    parser.add_argument("--rounds", type=int, default=5, help="plain/sealed pairs per route")
    args = parser.parse_args()
    seconds, rounds = args.seconds, args.rounds
    run_dir = Path(tempfile.mkdtemp(prefix="mg-privacy-bench-"))
    key_file = run_dir / "keys.json"
    key_id = rotate(key_file, 86400.0, time.time()).key_id
    upstream, gateway, proxy = free_port(), free_port(), free_port()
    config = run_dir / "gateway.yaml"
    config.write_text(yaml.safe_dump(gateway_config(gateway, upstream, key_file)))
    python = sys.executable
    children = [
        (
            procs.start(
                "upstream",
                [python, "-m", "bench.fake_upstream", "--port", str(upstream), "--tokens", "20"],
                run_dir,
            ),
            upstream,
        ),
        (
            procs.start(
                "gateway",
                [python, "-m", "messagegate.cli", "serve", "--config", str(config)],
                run_dir,
            ),
            gateway,
        ),
    ]
    try:
        for child, port in children:
            procs.wait_port(child, port, 30)
        proxy_command = [python, "-m", "messagegate.cli", "proxy", "--gateway"]
        proxy_command += [f"http://127.0.0.1:{gateway}", "--pin", key_id, "--api-key", KEY]
        proxy_command += ["--listen", f"127.0.0.1:{proxy}", "--log-level", "warning"]
        child = procs.start("proxy", proxy_command, run_dir)
        children.append((child, proxy))
        procs.wait_port(child, proxy, 30)
        for route, small in (("anthropic", False), ("openai", False), ("anthropic", True)):
            label = f"{route}{' (a 90-byte request)' if small else ''}"
            measure_route(
                label,
                request(gateway, route, True, small),
                request(proxy, route, False, small),
                (gateway, children[1][0].pid),
                (proxy, child.pid),
                seconds,
                rounds,
            )
    finally:
        for child, _ in children:
            child.stop()


if __name__ == "__main__":
    main()
