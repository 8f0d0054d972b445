"""``messagegate proxy`` and ``messagegate privacy keygen``: their arguments and what they run."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

import uvicorn

from messagegate.privacy.keys import KeyFileError, rotate
from messagegate.privacy.proxy import ProxyApp
from messagegate.privacy.trust import AttestedKeys, KeyTrust, PinnedKeys, load_verifier

API_KEY_VARIABLE = "MESSAGEGATE_API_KEY"


@dataclass(frozen=True, slots=True)
class Serving:
    """How the proxy serves: the gateway's own pieces, handed down by the command line (they
    live above this package): its HTTP protocol (a response head leaves with its body's start,
    a busy turn's writes together) and the pool's wake hook for the loop it runs in."""

    http: type[asyncio.Protocol] | str = "httptools"
    on_wake: Callable[[asyncio.AbstractEventLoop], Callable[[], None]] | None = None
    options: dict[str, Any] = field(default_factory=dict)


def add_privacy_commands(commands: Any) -> None:
    proxy = commands.add_parser("proxy", help="privacy mode's local proxy (plain API on loopback)")
    proxy.add_argument("--gateway", required=True, help="the gateway's URL")
    trust = proxy.add_mutually_exclusive_group(required=True)
    trust.add_argument(
        "--pin", action="append", help="trusted key fingerprint (sha256 hex); repeatable"
    )
    trust.add_argument("--attestation", help="MODULE:NAME of an attestation verifier factory")
    proxy.add_argument("--listen", default="127.0.0.1:8080", help="HOST:PORT (loopback)")
    proxy.add_argument("--api-key", help=f"the gateway key (default: ${API_KEY_VARIABLE})")
    proxy.add_argument("--log-level", default="info", choices=["debug", "info", "warning"])
    privacy = commands.add_parser("privacy", help="privacy mode's keys")
    actions = privacy.add_subparsers(dest="action", required=True)
    keygen = actions.add_parser("keygen", help="create the key file, or rotate its key")
    keygen.add_argument("--key-file", required=True, help="written with mode 0600")
    keygen.add_argument(
        "--grace", type=float, default=86400.0, help="seconds the replaced key still accepts"
    )


def privacy_command(args: argparse.Namespace, serving: Serving | None = None) -> int:
    if args.command == "privacy":
        return keygen(Path(args.key_file), args.grace)
    return run_proxy(args, serving or Serving())


def keygen(path: Path, grace: float) -> int:
    try:
        key = rotate(path, grace, time.time())
    except (KeyFileError, OSError) as exc:
        print(f"messagegate: {exc}", file=sys.stderr)
        return 2
    print(f"{path}: current key {key.key_id} (pin this with messagegate proxy --pin)")
    return 0


def _exit_cleanly(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(0)


def run_proxy(args: argparse.Namespace, serving: Serving) -> int:
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(name)s: %(message)s")
    host, _, port = args.listen.rpartition(":")
    trust: KeyTrust = (
        PinnedKeys(args.pin) if args.pin else AttestedKeys(load_verifier(args.attestation))
    )
    api_key = args.api_key or os.environ.get(API_KEY_VARIABLE)
    app = ProxyApp(args.gateway, trust, api_key, on_wake=serving.on_wake)
    config = uvicorn.Config(
        app,
        host=host.strip("[]") or "127.0.0.1",
        port=int(port),
        http=serving.http,
        lifespan="on",
        access_log=False,
        # Nothing between the socket and the app, as in the gateway.
        proxy_headers=False,
        server_header=False,
        log_config=None,
        log_level=args.log_level,
        **serving.options,
    )
    # uvicorn re-raises SIGTERM/SIGINT after its graceful shutdown: exit 0 instead of dying by it.
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, _exit_cleanly)
    server = uvicorn.Server(config)
    server.run()
    # A proxy that could not trust the gateway never started serving.
    return 0 if server.started else 3
