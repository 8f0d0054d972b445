"""The ``messagegate`` command: ``serve`` runs the gateway, ``check`` validates a config."""

from __future__ import annotations

import argparse
import gc
import logging
import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from types import FrameType
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import uvicorn

from messagegate.config import (
    CONFIG_PATH_VARIABLE,
    LOG_LEVEL_VARIABLE,
    Config,
    ConfigError,
    load_config,
    worker_settings,
)
from messagegate.log_output import BufferedStderrHandler, CachedTimeFormatter
from messagegate.server.app import GatewayApp
from messagegate.server.http_protocol import HttpProtocol

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print(f"messagegate: invalid config: {exc}", file=sys.stderr)
        return 2
    if args.command == "check":
        print(describe(config))
        return 0
    return serve(config, args)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="messagegate", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    serve_cmd = commands.add_parser("serve", help="run the gateway in the foreground")
    serve_cmd.add_argument("--config", required=True, help="the YAML config file")
    serve_cmd.add_argument("--host", help="overrides the config's listen host")
    serve_cmd.add_argument("--port", type=int, help="overrides the config's listen port")
    serve_cmd.add_argument("--workers", type=int, default=1, help="processes sharing the port")
    serve_cmd.add_argument("--log-level", default="info", choices=["debug", "info", "warning"])
    check_cmd = commands.add_parser("check", help="validate a config and print what it serves")
    check_cmd.add_argument("--config", required=True, help="the YAML config file")
    return parser


def tune_gc() -> None:
    """A request allocates many short-lived containers; collect young objects less often."""
    gc.set_threshold(50_000, 50, 1000)


def configure_logging(level: str) -> None:
    handler = BufferedStderrHandler()
    handler.setFormatter(CachedTimeFormatter(LOG_FORMAT))
    logging.basicConfig(level=level.upper(), handlers=[handler])
    # The format uses none of these, and gathering them per record (the caller's frame above
    # all) is most of what an access line costs: the logging HOWTO's "Optimization".
    logging._srcfile = None
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False


def serve(config: Config, args: argparse.Namespace) -> int:
    configure_logging(args.log_level)
    tune_gc()
    # After its graceful shutdown uvicorn re-raises SIGTERM/SIGINT for the handler it found;
    # with Python's defaults the process would then die by the signal instead of exiting 0.
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, _exit_cleanly)
    options: dict[str, Any] = {
        "host": args.host or config.host,
        "port": args.port or config.port,
        "loop": "uvloop",
        "http": HttpProtocol,
        "lifespan": "on",
        "access_log": False,
        # No proxy-headers middleware, no `server` header: nothing between the socket and the app.
        "proxy_headers": False,
        "server_header": False,
        "log_config": None,
        "timeout_graceful_shutdown": config.shutdown_grace,
    }
    if args.workers > 1:
        # Worker processes build their own app from the config file named in the environment.
        os.environ[CONFIG_PATH_VARIABLE] = str(Path(args.config).resolve())
        os.environ[LOG_LEVEL_VARIABLE] = args.log_level
        uvicorn.run(
            "messagegate.cli:app_from_environment",
            factory=True,
            workers=args.workers,
            **options,
        )
    else:
        uvicorn.run(GatewayApp(config), **options)
    return 0


def _exit_cleanly(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(0)


def app_from_environment() -> GatewayApp:
    """The app factory each worker process calls (``--workers N``); workers start afresh."""
    config, log_level = worker_settings()
    configure_logging(log_level)
    tune_gc()
    return GatewayApp(config)


def describe(config: Config) -> str:
    lines = [f"config {config.source} is valid", f"listen: {config.host}:{config.port}"]
    auth = f"{len(config.keys)} key(s)" if config.keys else "none (open to anyone who can connect)"
    lines.append(f"auth: {auth}")
    lines.append("providers:")
    for p in config.providers.values():
        extra = f" region={p.region}" if p.region else ""
        url = redact_url(p.base_url)
        lines.append(f"  {p.name}: {p.kind} {url}{extra} zdr={p.zero_data_retention}")
    lines.append("models:")
    for m in config.models.values():
        routes = ", ".join(r.label for r in m.routes)
        fallbacks = f" (fallbacks: {', '.join(m.fallbacks)})" if m.fallbacks else ""
        lines.append(f"  {m.name} -> {routes}{fallbacks}")
    return "\n".join(lines)


def redact_url(url: str) -> str:
    """`url` without the credentials it may carry: user info and query values."""
    parts = urlsplit(url)
    netloc = parts.netloc
    if "@" in netloc:
        netloc = "***@" + netloc.rpartition("@")[2]
    query = "&".join(f"{name.partition('=')[0]}=***" for name in parts.query.split("&") if name)
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


if __name__ == "__main__":
    raise SystemExit(main())
