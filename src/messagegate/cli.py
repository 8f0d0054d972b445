"""The ``messagegate`` command: ``serve`` runs the gateway, ``check`` validates a config, ``init``
writes a starter config, ``explain`` says which scenario a saved request matches, ``keys``
manages gateway keys, ``usage`` reports from the ledger, ``proxy`` runs privacy mode's local
proxy, ``privacy keygen`` makes or rotates its key."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import ipaddress
import json
import logging
import os
import shutil
import signal
import sys
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from types import FrameType
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import uvicorn

from messagegate import db_command, key_commands, usage_command
from messagegate.catalogue import no_provider_message
from messagegate.config import (
    CONFIG_PATH_VARIABLE,
    LOG_LEVEL_VARIABLE,
    METRICS_DIR_VARIABLE,
    Config,
    ConfigError,
    load_config,
    metrics_directory,
)
from messagegate.defaults import default_config, starter_file
from messagegate.log_output import BufferedStderrHandler, CachedTimeFormatter
from messagegate.privacy.commands import Serving, add_privacy_commands, privacy_command
from messagegate.routing.scenario_explain import describe_scenarios, explain
from messagegate.server.app import GatewayApp
from messagegate.server.coalescing import turn_flusher
from messagegate.server.http_protocol import HttpProtocol
from messagegate.store.base import StoreError
from messagegate.store.location import serving_database, shown
from messagegate.telemetry.json_logs import JsonFormatter

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "init":
        return init(args.config, os.environ)
    if args.command in ("proxy", "privacy"):
        if args.command == "proxy":
            tune_gc()
        return privacy_command(args, proxy_serving())
    try:
        config = load_settings(args.config, os.environ)
    except ConfigError as exc:
        print(f"messagegate: invalid config: {exc}", file=sys.stderr)
        return 2
    if args.command == "check":
        print(describe(config))
        return 0
    if args.command == "explain":
        return _explain(config, args)
    if args.command == "keys":
        return key_commands.run(args, config)
    if args.command == "usage":
        return usage_command.run(args, config)
    if args.command == "db":
        return db_command.run(args, config)
    return serve(config, args)


_CONFIG_HELP = f"the YAML config file (default: ${CONFIG_PATH_VARIABLE}, else the embedded default)"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="messagegate", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    serve_cmd = commands.add_parser("serve", help="run the gateway in the foreground")
    serve_cmd.add_argument("--config", help=_CONFIG_HELP)
    serve_cmd.add_argument("--host", help="overrides the config's listen host")
    serve_cmd.add_argument("--port", type=int, help="overrides the config's listen port")
    serve_cmd.add_argument("--workers", type=int, default=1, help="processes sharing the port")
    serve_cmd.add_argument("--log-level", default="info", choices=["debug", "info", "warning"])
    serve_cmd.add_argument(
        "--insecure-no-auth",
        action="store_true",
        help="listen on a non-loopback address although no gateway key is configured",
    )
    check_cmd = commands.add_parser("check", help="validate a config and print what it serves")
    check_cmd.add_argument("--config", help=_CONFIG_HELP)
    init_cmd = commands.add_parser(
        "init", help="write a starter config for the providers found in the environment"
    )
    init_cmd.add_argument("--config", default="messagegate.yaml", help="the file to write")
    add_privacy_commands(commands)
    explain_cmd = commands.add_parser(
        "explain", help="which scenario a saved request body matches, and why the others do not"
    )
    explain_cmd.add_argument("--config", help=_CONFIG_HELP)
    explain_cmd.add_argument("request", help="a saved /v1/messages request body (JSON)")
    explain_cmd.add_argument("--key", help="the name of the key the request comes with")
    explain_cmd.add_argument(
        "--header", action="append", default=[], help="a request header, 'name: value'"
    )
    key_commands.add_parser(commands, _CONFIG_HELP)
    usage_command.add_parser(commands, _CONFIG_HELP)
    db_command.add_parser(commands, _CONFIG_HELP)
    return parser


def load_settings(path: str | None, environ: Mapping[str, str]) -> Config:
    """The config file named, else the one in the environment, else the embedded default."""
    path = path or environ.get(CONFIG_PATH_VARIABLE)
    return load_config(path, environ) if path else default_config(environ)


def init(path: str, environ: Mapping[str, str]) -> int:
    try:
        with open(path, "x") as file:
            file.write(starter_file(environ, path))
    except FileExistsError:
        print(f"messagegate: {path} exists; not overwriting it", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"messagegate: cannot write {path}: {exc.strerror}", file=sys.stderr)
        return 2
    print(f"wrote {path}; start with: messagegate serve --config {path}")
    return 0


def _explain(config: Config, args: argparse.Namespace) -> int:
    try:
        body = json.loads(Path(args.request).read_text())
    except (OSError, ValueError) as exc:
        print(f"messagegate: cannot read request {args.request}: {exc}", file=sys.stderr)
        return 2
    if not isinstance(body, dict):
        print(f"messagegate: {args.request}: expected a JSON object", file=sys.stderr)
        return 2
    headers = {}
    for header in args.header:
        name, _, value = header.partition(":")
        headers[name.strip().lower()] = value.strip()
    print(asyncio.run(explain(config, body, args.key, headers)))
    return 0


# Secrets are registered in one worker's memory (privacy/secrets.py); README, Privacy mode.
PRIVACY_WORKERS_WARNING = (
    "privacy mode's secrets live in the worker that registered them: a sealed request that "
    "another worker takes is refused as unknown_secret and its proxy registers again; run a "
    "privacy-mode gateway with one worker (scale with more processes behind client affinity)"
)


def proxy_serving() -> Serving:
    """`messagegate proxy` serves with the gateway's pieces: its HTTP protocol, its loop and
    the pool's wake hook."""
    return Serving(
        http=HttpProtocol,
        on_wake=lambda loop: turn_flusher(loop).follow,
        options={"loop": "uvloop"},
    )


def tune_gc() -> None:
    """A request allocates many short-lived containers; collect young objects less often."""
    gc.set_threshold(50_000, 50, 1000)


def configure_logging(level: str, log_format: str = "text") -> None:
    handler = BufferedStderrHandler()
    json = log_format == "json"
    handler.setFormatter(JsonFormatter() if json else CachedTimeFormatter(LOG_FORMAT))
    logging.basicConfig(level=level.upper(), handlers=[handler])
    # The format uses none of these, and gathering them per record (the caller's frame above
    # all) is most of what an access line costs: the logging HOWTO's "Optimization".
    logging._srcfile = None
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False


def serve(config: Config, args: argparse.Namespace) -> int:
    host, port = args.host or config.host, args.port or config.port
    try:
        stored_keys = key_commands.active_stored_keys(config)
    except StoreError as exc:
        print(f"messagegate: {exc}", file=sys.stderr)
        return 2
    refusal = start_refusal(config, host, port, args.insecure_no_auth, stored_keys)
    if refusal is not None:
        print(f"messagegate: {refusal}", file=sys.stderr)
        return 2
    print(describe(config, f"{host}:{port}"), flush=True)
    if stored_keys is not None:
        location = shown(serving_database(config) or "")
        print(f"stored keys: {stored_keys} active in {location}", flush=True)
    if not config.providers:
        print(f"messagegate: {no_provider_message()}", file=sys.stderr, flush=True)
    configure_logging(args.log_level, config.log_format)
    tune_gc()
    # After its graceful shutdown uvicorn re-raises SIGTERM/SIGINT for the handler it found;
    # with Python's defaults the process would then die by the signal instead of exiting 0.
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, _exit_cleanly)
    options: dict[str, Any] = {
        "host": host,
        "port": port,
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
    if args.workers > 1 and config.redis is None:
        print(
            f"messagegate: key limits (rpm, tpm, concurrency, budgets) are per process: each of "
            f"the {args.workers} workers enforces them on its own (`redis:` shares them)",
            file=sys.stderr,
            flush=True,
        )
    if args.workers > 1 and config.privacy.mode != "off":
        print(f"messagegate: {PRIVACY_WORKERS_WARNING}", file=sys.stderr, flush=True)
    if args.workers > 1:
        # Worker processes build their own app from the config file named in the environment
        # (or, with none named, from the embedded default, as this process did).
        if args.config:
            os.environ[CONFIG_PATH_VARIABLE] = str(Path(args.config).resolve())
        os.environ[LOG_LEVEL_VARIABLE] = args.log_level
        with _shared_metrics(config):
            uvicorn.run(
                "messagegate.cli:app_from_environment",
                factory=True,
                workers=args.workers,
                **options,
            )
    else:
        uvicorn.run(GatewayApp(config), **options)
    return 0


@contextlib.contextmanager
def _shared_metrics(config: Config) -> Iterator[None]:
    """Workers write their metrics to files in one directory, so that any worker's scrape
    covers them all; a directory the operator chose is kept, one made here is removed."""
    if not config.metrics.enabled or metrics_directory() is not None:
        yield
        return
    directory = tempfile.mkdtemp(prefix="messagegate-metrics-")
    os.environ[METRICS_DIR_VARIABLE] = directory
    try:
        yield
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def _exit_cleanly(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(0)


def app_from_environment() -> GatewayApp:
    """The app factory each worker process calls (``--workers N``); workers start afresh."""
    config = load_settings(None, os.environ)
    configure_logging(os.environ.get(LOG_LEVEL_VARIABLE, "info"), config.log_format)
    tune_gc()
    return GatewayApp(config)


def start_refusal(
    config: Config, host: str, port: int, insecure_no_auth: bool, stored_keys: int | None = None
) -> str | None:
    """Why `serve` must not start: an open gateway off loopback, or a provider that is itself."""
    open_to_all = not config.keys and not stored_keys
    if open_to_all and not insecure_no_auth and not _is_loopback(host):
        return (
            f"refusing to listen on {host}:{port} without a gateway key: set "
            "MESSAGEGATE_API_KEY or `keys:` in a config file, or pass --insecure-no-auth"
        )
    for provider in config.providers.values():
        url = urlsplit(provider.base_url)
        default_port = 443 if url.scheme == "https" else 80
        if (url.port or default_port) == port and _same_host(url.hostname or "", host):
            return (
                f"provider {provider.name!r} points at this gateway's own address "
                f"({provider.base_url}); its requests would come back here"
            )
    return None


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _same_host(upstream: str, listen: str) -> bool:
    """Would a connection to `upstream` reach a server listening on `listen`?"""
    if upstream == listen:
        return True
    listens_everywhere = listen in ("0.0.0.0", "::", "")
    return _is_loopback(upstream) and (listens_everywhere or _is_loopback(listen))


def describe(config: Config, listen: str | None = None) -> str:
    lines = [
        f"config {config.source} is valid",
        f"listen: {listen or f'{config.host}:{config.port}'}",
    ]
    auth = f"{len(config.keys)} key(s)" if config.keys else "none (open to anyone who can connect)"
    lines.append(f"auth: {auth}")
    if config.redis is not None:
        outage = config.on_outage
        lines.append(
            f"limits: shared through {redact_url(config.redis.url)} (on outage: rate limits "
            f"{outage.rate_limits}, concurrency {outage.concurrency}, budgets {outage.budgets})"
        )
    lines.append("providers:" if config.providers else "providers: none")
    for p in config.providers.values():
        extra = f" region={p.region}" if p.region else ""
        if p.proxy:
            extra += f" proxy={redact_url(p.proxy)}"
        if not p.tls.verify:
            extra += " tls-verify=OFF"
        lines.append(
            f"  {p.name}: {p.kind} {redact_url(p.base_url)}{extra} zdr={p.zero_data_retention}"
        )
    lines.append("models:" if config.models or config.patterns else "models: none")
    for m in (*config.models.values(), *config.patterns):
        routes = ", ".join(
            r.label if r.model else f"{r.provider.name}/<as asked>" for r in m.routes
        )
        fallbacks = f" (fallbacks: {', '.join(m.fallbacks)})" if m.fallbacks else ""
        lines.append(f"  {m.name} -> {routes}{fallbacks}")
    if config.explicit_provider_models and config.providers:
        lines.append(
            "  provider/model -> that provider, that model (e.g. "
            f"{next(iter(config.providers))}/some-model)"
        )
    lines.extend(describe_scenarios(config))
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
