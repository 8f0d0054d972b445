"""The `redis:` and `on_outage:` settings: where limits shared by every replica live, and what each
kind of limit and the stored keys do while Redis or the database cannot be reached. Parsed by
config.py's reader."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, Protocol
from urllib.parse import urlsplit

OutageMode = Literal["fail_open", "fail_closed"]
OUTAGE_MODES = ("fail_open", "fail_closed")


class RedisUrl(str):
    """A Redis URL; its password never shows in a repr."""

    def __repr__(self) -> str:
        return "RedisUrl('***')"


@dataclass(frozen=True, slots=True)
class RedisSettings:
    url: RedisUrl
    # Every Redis key starts with it: `<prefix>:{<key name>}:...`.
    prefix: str = "mg"
    # Seconds: a hung Redis costs a request at most `connect_timeout` or `timeout`, once per
    # outage; then the circuit answers for `retry_interval` without asking.
    connect_timeout: float = 0.5
    timeout: float = 0.5
    retry_interval: float = 5.0
    # A running request's concurrency lease and budget reservation expire `lease_ttl` seconds
    # after their last renewal (every third of it), so a replica that dies leaks neither.
    lease_ttl: float = 30.0
    max_connections: int = 64


@dataclass(frozen=True, slots=True)
class OutagePolicy:
    """Limits: fail_open admits by the in-process limits while Redis is away; fail_closed
    refuses. Keys: fail_open keeps accepting the stored keys last read while the database is
    away; fail_closed refuses them (503) once they could not be refreshed for 10 s (server/auth.py's
    KEYS_STALE_LIMIT)."""

    rate_limits: OutageMode = "fail_open"
    concurrency: OutageMode = "fail_open"
    budgets: OutageMode = "fail_closed"
    keys: OutageMode = "fail_open"


class Reader(Protocol):
    def fail(self, path: str, problem: str) -> Exception: ...
    def mapping(self, value: object, path: str, allowed: frozenset[str]) -> dict[str, Any]: ...
    def get(
        self, data: dict[str, Any], key: str, path: str, kind: type, default: Any = None
    ) -> Any: ...
    def positive(self, data: dict[str, Any], key: str, path: str, default: float) -> float: ...
    def choice(
        self, data: dict[str, Any], key: str, path: str, allowed: tuple[str, ...]
    ) -> Any: ...


_SCHEMES = ("redis", "rediss", "unix")


def read_redis(reader: Reader, raw: object) -> RedisSettings | None:
    """A URL string, or a mapping with `url` and the options of RedisSettings."""
    if raw is None:
        return None
    data = {"url": raw} if isinstance(raw, str) else raw
    fields = frozenset(RedisSettings.__dataclass_fields__)
    data = reader.mapping(data, "redis", fields)
    url = reader.get(data, "url", "redis", str)
    if url is None or urlsplit(url).scheme not in _SCHEMES:
        raise reader.fail("redis.url", "expected a redis://, rediss:// or unix:// URL")
    prefix = reader.get(data, "prefix", "redis", str, "mg")
    if not prefix or "{" in prefix or "}" in prefix:
        raise reader.fail("redis.prefix", "must be non-empty, without { or }")
    max_connections = reader.get(data, "max_connections", "redis", int, 64)
    if max_connections <= 0:
        raise reader.fail("redis.max_connections", "must be a positive integer")
    settings = RedisSettings(
        url=RedisUrl(url),
        prefix=prefix,
        connect_timeout=reader.positive(data, "connect_timeout", "redis", 0.5),
        timeout=reader.positive(data, "timeout", "redis", 0.5),
        retry_interval=reader.positive(data, "retry_interval", "redis", 5.0),
        lease_ttl=reader.positive(data, "lease_ttl", "redis", 30.0),
        max_connections=max_connections,
    )
    if settings.lease_ttl < 3:
        raise reader.fail("redis.lease_ttl", "must be at least 3 seconds")
    return settings


def read_outage(reader: Reader, raw: object) -> OutagePolicy:
    if raw is None:
        return OutagePolicy()
    data = reader.mapping(raw, "on_outage", frozenset(OutagePolicy.__dataclass_fields__))
    defaults = OutagePolicy()
    modes = {
        name: reader.choice(data, name, "on_outage", _ordered(getattr(defaults, name)))
        for name in data
    }
    return OutagePolicy(**modes)


def _ordered(default: str) -> tuple[str, ...]:
    """The allowed modes, the default first (what `choice` expects)."""
    return (default, *(m for m in OUTAGE_MODES if m != default))
