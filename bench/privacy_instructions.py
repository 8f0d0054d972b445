"""Instructions per request of privacy mode on Claude Code's first turn, at several git
revisions, measured in one run (bench.instructions' method: callgrind, counters zeroed after a
warm-up, a fixed number of sequential requests, repeatable to ~0.2% however busy the machine).

    python -m bench.privacy_instructions --rev main --rev WORKTREE [--requests 100] [--route ...]

Per revision and route, one gateway (``privacy: optional``) and one ``messagegate proxy`` run
under callgrind against the bench's fake upstream (20 tokens, streamed). The same 81 KB request
goes straight to the gateway (plaintext, with the key) and through the proxy (sealed); each
row is one process's instructions per request: the gateway plain, the gateway sealed (what
opening the request and sealing the answer add is the difference) and the proxy.
"""

from __future__ import annotations

import argparse
import http.client
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import orjson
import yaml

from bench import procs
from bench.instructions import ROOT, WORKTREE, control, free_port, instructions, source_tree
from bench.privacy_ttft import FIRST_TURN, KEY, gateway_config
from messagegate.privacy.keys import rotate

ROUTES = ("anthropic", "openai")


def send(port: int, body: bytes, with_key: bool, count: int) -> None:
    """`count` sequential streamed requests on one keep-alive connection; each must succeed."""
    headers = {"content-type": "application/json", "anthropic-version": "2023-06-01"}
    if with_key:
        headers["x-api-key"] = KEY
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    try:
        for _ in range(count):
            connection.request("POST", "/v1/messages", body, headers)
            response = connection.getresponse()
            payload = response.read()
            if response.status != 200 or b"message_stop" not in payload:
                raise RuntimeError(f"port {port} answered {response.status}: {payload[:300]!r}")
    finally:
        connection.close()


def under_callgrind(out: Path, command: list[str]) -> list[str]:
    return ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", *command]


def counted(
    child: procs.Child, out: Path, send_requests: Callable[[], None], requests: int
) -> float:
    """Instructions per request of `child` while `send_requests()` runs."""
    control(child.pid, "-z")
    send_requests()
    control(child.pid, "-d")
    return instructions(out) / requests


def measure(src: Path, route: str, requests: int, warmup: int, work: Path) -> dict[str, float]:
    key_file = work / "keys.json"
    key_id = rotate(key_file, 86400.0, time.time()).key_id
    upstream_port, gateway_port, proxy_port = free_port(), free_port(), free_port()
    config = work / "gateway.yaml"
    config.write_text(yaml.safe_dump(gateway_config(gateway_port, upstream_port, key_file)))
    env = {"PYTHONPATH": str(src), "PATH": "/usr/bin:/bin", "HOME": str(Path.home())}
    python = sys.executable
    upstream_command = [python, "-m", "bench.fake_upstream", "--port", str(upstream_port)]
    upstream_command += ["--tokens", "20"]
    upstream = procs.start("upstream", upstream_command, work, cwd=ROOT)
    gateway_out, proxy_out = work / "gateway.callgrind", work / "proxy.callgrind"
    gateway_command = [python, "-m", "messagegate.cli", "serve", "--config", str(config)]
    gateway_command += ["--log-level", "warning"]
    gateway = procs.start("gateway", under_callgrind(gateway_out, gateway_command), work, env=env)
    children = [upstream, gateway]
    try:
        procs.wait_port(upstream, upstream_port, 30)
        procs.wait_port(gateway, gateway_port, 300)
        proxy_command = [python, "-m", "messagegate.cli", "proxy", "--gateway"]
        proxy_command += [f"http://127.0.0.1:{gateway_port}", "--pin", key_id, "--api-key", KEY]
        proxy_command += ["--listen", f"127.0.0.1:{proxy_port}", "--log-level", "warning"]
        proxy = procs.start("proxy", under_callgrind(proxy_out, proxy_command), work, env=env)
        children.append(proxy)
        procs.wait_port(proxy, proxy_port, 300)
        body = orjson.loads(FIRST_TURN.read_bytes()) | {"model": f"bench-{route}", "stream": True}
        raw = orjson.dumps(body)
        send(gateway_port, raw, True, warmup)
        send(proxy_port, raw, False, warmup)
        plain = counted(
            gateway, gateway_out, lambda: send(gateway_port, raw, True, requests), requests
        )
        control(proxy.pid, "-z")
        sealed = counted(
            gateway, gateway_out, lambda: send(proxy_port, raw, False, requests), requests
        )
        control(proxy.pid, "-d")
        proxied = instructions(proxy_out) / requests
        return {"gateway plain": plain, "gateway sealed": sealed, "proxy": proxied}
    finally:
        for child in reversed(children):
            child.stop()


def main(argv: Sequence[str] | None = None) -> int:
    prog = "python -m bench.privacy_instructions"
    parser = argparse.ArgumentParser(prog=prog, description=__doc__)
    parser.add_argument("--rev", action="append", help=f"a git revision or {WORKTREE} (repeat)")
    parser.add_argument("--route", action="append", choices=ROUTES)
    parser.add_argument("--requests", type=int, default=100)
    parser.add_argument("--warmup", type=int, default=50)
    args = parser.parse_args(argv)
    if shutil.which("valgrind") is None or shutil.which("callgrind_control") is None:
        print("valgrind (Debian's valgrind package) is needed", file=sys.stderr)
        return 2
    revs = args.rev or ["HEAD", WORKTREE]
    rows: dict[tuple[str, str], dict[str, float]] = {}
    for rev in revs:
        with source_tree(rev) as src:
            for route in args.route or ROUTES:
                with tempfile.TemporaryDirectory(prefix="mg-cg-privacy-") as work:
                    counts = measure(src, route, args.requests, args.warmup, Path(work))
                for process, count in counts.items():
                    rows.setdefault((route, process), {})[rev] = count
                    print(f"{rev:>12} {route:<10} {process:<15} {count:>12,.0f} instructions")
    print("\n| route | process | " + " | ".join(revs) + f" | last / {revs[0]} |")
    print("|---|---|" + "---:|" * (len(revs) + 1))
    for (route, process), by_rev in rows.items():
        cells = " | ".join(f"{by_rev[r]:,.0f}" for r in revs)
        print(f"| {route} | {process} | {cells} | {by_rev[revs[-1]] / by_rev[revs[0]]:.4f}x |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
