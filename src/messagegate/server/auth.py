"""Gateway keys, as ``x-api-key`` or ``Authorization: Bearer``: found by their SHA-256 in a
snapshot of the config's keys and the key store's, which a background task keeps current."""

from __future__ import annotations

import asyncio
import enum
import logging
import math
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from functools import partial

from messagegate.config import ApiKey, RoutingDefaults, Secret
from messagegate.config.keyspec import iso_time
from messagegate.config.redis import OutagePolicy
from messagegate.errors import AuthenticationFailed, GatewayError, ServiceUnavailable
from messagegate.store.base import KeyStore, StoredKey, digest

error_log = logging.getLogger("messagegate.error")

# Revocation reaches every gateway within 1 s: the store is asked this often whether keys changed
# (a store that announces changes wakes the refresh sooner).
REFRESH_INTERVAL = 0.5
# One refresh may take this long before it counts as failed.
REFRESH_TIMEOUT = 2.0
# With `on_outage: {keys: fail_closed}`, stored keys are refused once not refreshed for this long.
KEYS_STALE_LIMIT = 10.0
# (key, the time it stops working or inf, the error refusing it or None)
_Entry = tuple[ApiKey, float, Callable[[], GatewayError] | None]
# The entries of keys presented lately (only keys that were found), by the key's text, until the
# keys are loaded again: a dict lookup costs a tenth of a SHA-256. Past this many, the memory
# starts over.
MAX_REMEMBERED = 1024
# A deadline of a key that has none.
NEVER = math.inf


class KeyChecker:
    """Looking a key up by its digest is constant-time in what matters: a timing difference
    tells an attacker about a SHA-256 of their guess, not about any key. The entries of keys
    that were found are remembered by the key's text (str hashes are keyed per process: a lookup
    there tells nothing either), until the entries change."""

    def __init__(self, keys: Sequence[ApiKey], clock: Callable[[], float] = time.time) -> None:
        self.clock = clock
        self._static: dict[bytes, _Entry] = {
            digest(key.key): (key, _deadline(key, None), None) for key in keys
        }
        self.entries = self._static
        self._stored: dict[bytes, _Entry] = {}
        # A presented key's entry in `entries` (emptied with each new `entries`).
        self._found: dict[str, _Entry] = {}

    @property
    def enabled(self) -> bool:
        return bool(self.entries)

    def load(self, stored: Iterable[StoredKey]) -> None:
        """Replace the stored keys (in one assignment: a request sees the old or the new set)."""
        self._stored = {}
        for key in stored:
            self._stored.update(_entries(key))
        self.entries, self._found = {**self._static, **self._stored}, {}

    def withhold_stored(self, message: str) -> None:
        """Refuse every stored key with a retryable 503 (until the next `load`)."""
        refusal = partial(ServiceUnavailable, message)
        withheld = {d: (key, NEVER, refusal) for d, (key, _, _) in self._stored.items()}
        self.entries, self._found = {**self._static, **withheld}, {}

    def check(self, headers: Mapping[str, str]) -> ApiKey | None:
        """The matching key; None when the gateway has no keys; AuthenticationFailed otherwise."""
        entries = self.entries
        if not entries:
            return None
        presented = headers.get("x-api-key") or _presented(headers)
        if presented is None:
            raise AuthenticationFailed("x-api-key header is required")
        entry = self._found.get(presented)
        if entry is None:
            entry = entries.get(digest(presented))
            if entry is None:
                raise AuthenticationFailed("invalid x-api-key")
            if len(self._found) >= MAX_REMEMBERED:
                self._found.clear()
            self._found[presented] = entry
        key, deadline, refusal = entry
        if refusal is not None:
            raise refusal()
        if deadline != NEVER and self.clock() >= deadline:
            raise AuthenticationFailed(_expired(key, deadline))
        return key


class Freshness(enum.Enum):
    CURRENT = "current"  # the last refresh worked
    STALE = "stale"  # refreshes fail; the keys last read still apply
    WITHHELD = "withheld"  # fail_closed and stale too long: stored keys are refused


class KeyRefresh:
    """Keeps a KeyChecker within REFRESH_INTERVAL of the store. A store that fails keeps the last
    snapshot (`on_outage: {keys: fail_open}`, the default: an outage locks nobody out, and a key
    revoked meanwhile works until the store is back), or with fail_closed refuses the stored keys
    once they are KEYS_STALE_LIMIT old (a revoked key cannot outlive that)."""

    def __init__(
        self,
        store: KeyStore,
        checker: KeyChecker,
        interval: float = REFRESH_INTERVAL,
        on_outage: OutagePolicy | None = None,
        stale_limit: float = KEYS_STALE_LIMIT,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.store = store
        self.checker = checker
        self.interval = interval
        self.fail_closed = (on_outage or OutagePolicy()).keys == "fail_closed"
        self.stale_limit = stale_limit
        self.clock = clock
        self.generation: int | None = None
        self.freshness = Freshness.CURRENT
        self.refreshed_at = clock()
        self.task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self.reload()
        self.task = asyncio.create_task(self._loop())

    async def reload(self) -> None:
        self.generation, keys = await self.store.keys()
        self.checker.load(keys)
        self._became(Freshness.CURRENT)

    async def refresh(self) -> None:
        """Reload if any key changed since the last load (or the stored keys were withheld)."""
        generation = await self.store.generation()
        if generation != self.generation or self.freshness is Freshness.WITHHELD:
            await self.reload()
        else:
            self._became(Freshness.CURRENT)

    async def _loop(self) -> None:
        while True:
            await self.store.wait_for_change(self.interval)
            try:
                async with asyncio.timeout(REFRESH_TIMEOUT):
                    await self.refresh()
            except Exception as exc:
                self._failed(exc)

    def _failed(self, exc: Exception) -> None:
        reason = str(exc) or type(exc).__name__
        if self.freshness is Freshness.CURRENT:
            error_log.warning("cannot refresh the keys from the store: %s", reason)
            self._became(Freshness.STALE)
        stale_for = self.clock() - self.refreshed_at
        if self.fail_closed and self.freshness is Freshness.STALE and stale_for > self.stale_limit:
            error_log.error(
                "stored keys refused (on_outage: fail_closed): not refreshed for %.0f s: %s",
                stale_for,
                reason,
            )
            self.checker.withhold_stored(
                "the gateway cannot read its keys from the database; retry shortly"
            )
            self._became(Freshness.WITHHELD)

    def _became(self, freshness: Freshness) -> None:
        """The one place the freshness changes."""
        if freshness is Freshness.CURRENT:
            self.refreshed_at = self.clock()
            if self.freshness is not Freshness.CURRENT:
                error_log.warning("the keys are refreshed from the store again")
        self.freshness = freshness

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            await asyncio.gather(self.task, return_exceptions=True)
            self.task = None


def _entries(stored: StoredKey) -> Iterable[tuple[bytes, _Entry]]:
    settings = stored.settings
    key = ApiKey(
        key=Secret(""),
        name=stored.name,
        routing=RoutingDefaults(values=settings.routing),
        models=settings.models,
        limits=settings.limits,
        expires_at=settings.expires_at,
    )
    refusal = (
        None
        if stored.revoked_at is None
        else partial(AuthenticationFailed, f"this key ({stored.name}) was revoked")
    )
    for secret in stored.secrets:
        yield secret.digest, (key, _deadline(key, secret.valid_until), refusal)


def _deadline(key: ApiKey, valid_until: float | None) -> float:
    times = [t for t in (key.expires_at, valid_until) if t is not None]
    return min(times, default=NEVER)


def _expired(key: ApiKey, deadline: float) -> str:
    if key.expires_at is not None and deadline == key.expires_at:
        return f"this key ({key.name}) expired at {iso_time(deadline)}"
    return f"this key ({key.name}) was rotated; its grace period ended at {iso_time(deadline)}"


def _presented(headers: Mapping[str, str]) -> str | None:
    key = headers.get("x-api-key")
    if key:
        return key
    authorization = headers.get("authorization", "")
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    return None
