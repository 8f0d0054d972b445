"""What the config takes from the environment: ``${VAR}`` references, proxies, default paths."""

from __future__ import annotations

import datetime
import ipaddress
import os
import re
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import urlsplit

from messagegate.config.problems import fail, join

CONFIG_PATH_VARIABLE = "MESSAGEGATE_CONFIG"
LOG_LEVEL_VARIABLE = "MESSAGEGATE_LOG_LEVEL"
# prometheus_client's own variable: set, every worker writes its metrics to files there.
METRICS_DIR_VARIABLE = "PROMETHEUS_MULTIPROC_DIR"
_ENV_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


def substitute(value: object, path: str, source: str, environ: Mapping[str, str]) -> object:
    """The YAML tree with every ``${VAR}`` replaced, mapping keys as strings and dates as ISO text
    (YAML reads unquoted ones as dates; every config key that holds a time is text)."""
    if isinstance(value, str):

        def variable(match: re.Match[str]) -> str:
            if match.group(1) not in environ:
                raise fail(source, path, f"environment variable {match.group(1)} is not set")
            return environ[match.group(1)]

        return _ENV_VAR.sub(variable, value)
    if isinstance(value, dict):
        return {str(k): substitute(v, join(path, k), source, environ) for k, v in value.items()}
    if isinstance(value, list):
        return [substitute(v, join(path, i), source, environ) for i, v in enumerate(value)]
    if isinstance(value, datetime.date):
        return value.isoformat()
    return value


def metrics_directory() -> str | None:
    """Where ``serve --workers N`` has its workers share metrics (None: one process)."""
    return os.environ.get(METRICS_DIR_VARIABLE) or None


def default_database_path(environ: Mapping[str, str]) -> str | None:
    """``$XDG_DATA_HOME/messagegate/messagegate.db``, else ``~/.local/share/messagegate/...``."""
    data_home = environ.get("XDG_DATA_HOME") or (
        str(Path(environ["HOME"]) / ".local" / "share") if environ.get("HOME") else None
    )
    return str(Path(data_home) / "messagegate" / "messagegate.db") if data_home else None


def environment_proxy(base_url: str, environ: Mapping[str, str]) -> tuple[str | None, str]:
    """The proxy the environment sets for `base_url`, and the variable it came from.

    As curl and httpx: `https_proxy`/`HTTPS_PROXY` for https, `http_proxy`/`HTTP_PROXY` for http,
    `all_proxy`/`ALL_PROXY` otherwise; none when `no_proxy`/`NO_PROXY` names the host.
    """
    parts = urlsplit(base_url)
    scheme = parts.scheme
    if _no_proxy(parts.hostname or "", parts.port, environ):
        return None, "NO_PROXY"
    for name in (f"{scheme}_proxy", f"{scheme.upper()}_PROXY", "all_proxy", "ALL_PROXY"):
        value = environ.get(name, "").strip()
        if value:
            return value, name
    return None, ""


def _no_proxy(host: str, port: int | None, environ: Mapping[str, str]) -> bool:
    raw = environ.get("no_proxy") or environ.get("NO_PROXY") or ""
    for entry in (e.strip().lower() for e in raw.split(",")):
        if not entry:
            continue
        if entry == "*":
            return True
        entry_host, _, entry_port = entry.rpartition(":") if _has_port(entry) else (entry, "", "")
        if entry_port and port is not None and str(port) != entry_port:
            continue
        if _host_matches(host.lower(), entry_host.strip("[]").lstrip(".")):
            return True
    return False


def _has_port(entry: str) -> bool:
    head, sep, tail = entry.rpartition(":")
    return bool(sep) and tail.isdigit() and (head.endswith("]") or ":" not in head)


def _host_matches(host: str, entry: str) -> bool:
    if host == entry or host.endswith("." + entry):
        return True
    try:
        return ipaddress.ip_address(host) in ipaddress.ip_network(entry, strict=False)
    except ValueError:
        return False
