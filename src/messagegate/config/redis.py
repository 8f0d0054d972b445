"""The `redis:` and `on_outage:` settings: where limits shared by every replica live, and what each
kind of limit and the stored keys do while Redis or the database cannot be reached."""

from __future__ import annotations

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


class RedisSettings(Section, frozen=True):
    """`redis:` as a mapping (a plain string is its `url`)."""

    # redis://[user:password@]host:port/db, rediss:// or unix://path; never shown in a repr.
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

    def __repr__(self) -> str:
        return f"RedisSettings(url='***', prefix={self.prefix!r})"


class OutagePolicy(Section, frozen=True):
    """Limits: fail_open admits by the in-process limits while Redis is away; fail_closed
    refuses. Keys: fail_open keeps accepting the stored keys last read while the database is
    away; fail_closed refuses them (503) once they could not be refreshed for 10 s (server/auth.py's
    KEYS_STALE_LIMIT)."""

    rate_limits: OutageMode = "fail_open"
    concurrency: OutageMode = "fail_open"
    budgets: OutageMode = "fail_closed"
    keys: OutageMode = "fail_open"


def resolve_redis(ctx: Context, spec: str | RedisSettings | None) -> RedisSettings | None:
    if spec is None:
        return None
    if isinstance(spec, str):
        spec = RedisSettings(url=spec)
    if urlsplit(spec.url).scheme not in _SCHEMES:
        raise ctx.fail("redis.url", "expected a redis://, rediss:// or unix:// URL")
    if not spec.prefix or "{" in spec.prefix or "}" in spec.prefix:
        raise ctx.fail("redis.prefix", "must be non-empty, without { or }")
    return spec
