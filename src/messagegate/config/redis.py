"""The `redis:` and `on_outage:` settings: where limits shared by every replica live, and what each
kind of limit and the stored keys do while Redis or the database cannot be reached."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Literal
from urllib.parse import urlsplit

import msgspec

from messagegate.config.context import Context

OutageMode = Literal["fail_open", "fail_closed"]

_SCHEMES = ("redis", "rediss", "unix")
# As config/objects.py says them (it imports this module, so they are spelled here too).
Positive = Annotated[float, msgspec.Meta(gt=0)]
PositiveInt = Annotated[int, msgspec.Meta(ge=1)]


class Section(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """A config section read as written: unknown keys are errors."""


class RedisUrl(str):
    """A Redis URL; its password never shows in a repr."""

    def __repr__(self) -> str:
        return "RedisUrl('***')"


class RedisSpec(Section, frozen=True):
    """`redis:` as a mapping (a plain string is its `url`)."""

    url: str
    # Every Redis key starts with it: `<prefix>:{<key name>}:...`.
    prefix: str = "mg"
    # Seconds: a hung Redis costs a request at most `connect_timeout` or `timeout`, once per
    # outage; then the circuit answers for `retry_interval` without asking.
    connect_timeout: Positive = 0.5
    timeout: Positive = 0.5
    retry_interval: Positive = 5.0
    # A running request's concurrency lease and budget reservation expire `lease_ttl` seconds
    # after their last renewal (every third of it), so a replica that dies leaks neither.
    lease_ttl: Annotated[float, msgspec.Meta(ge=3)] = 30.0
    max_connections: PositiveInt = 64


@dataclass(frozen=True, slots=True)
class RedisSettings:
    url: RedisUrl
    prefix: str = "mg"
    connect_timeout: float = 0.5
    timeout: float = 0.5
    retry_interval: float = 5.0
    lease_ttl: float = 30.0
    max_connections: int = 64


class OutagePolicy(Section, frozen=True):
    """Limits: fail_open admits by the in-process limits while Redis is away; fail_closed
    refuses. Keys: fail_open keeps accepting the stored keys last read while the database is
    away; fail_closed refuses them (503) once they could not be refreshed for 10 s (server/auth.py's
    KEYS_STALE_LIMIT)."""

    rate_limits: OutageMode = "fail_open"
    concurrency: OutageMode = "fail_open"
    budgets: OutageMode = "fail_closed"
    keys: OutageMode = "fail_open"


def resolve_redis(ctx: Context, spec: str | RedisSpec | None) -> RedisSettings | None:
    if spec is None:
        return None
    if isinstance(spec, str):
        spec = RedisSpec(url=spec)
    if urlsplit(spec.url).scheme not in _SCHEMES:
        raise ctx.fail("redis.url", "expected a redis://, rediss:// or unix:// URL")
    if not spec.prefix or "{" in spec.prefix or "}" in spec.prefix:
        raise ctx.fail("redis.prefix", "must be non-empty, without { or }")
    return RedisSettings(
        url=RedisUrl(spec.url),
        prefix=spec.prefix,
        connect_timeout=spec.connect_timeout,
        timeout=spec.timeout,
        retry_interval=spec.retry_interval,
        lease_ttl=spec.lease_ttl,
        max_connections=spec.max_connections,
    )
