"""Gateway keys, as ``x-api-key`` or ``Authorization: Bearer``: found by their SHA-256 in a
snapshot of the config's keys and the key store's, which a background task keeps current."""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable, Iterable, Mapping, Sequence

from messagegate.config import ApiKey, RoutingDefaults, Secret
from messagegate.config.keyspec import iso_time
from messagegate.errors import AuthenticationFailed
from messagegate.store.base import KeyStore, StoredKey, digest

error_log = logging.getLogger("messagegate.error")

# Revocation reaches every gateway within 1 s: the store is asked this often whether keys changed.
REFRESH_INTERVAL = 0.5
# (key, the time it stops working or inf, why it does not work or None)
_Entry = tuple[ApiKey, float, str | None]


class KeyChecker:
    """Looking a key up by its digest is constant-time in what matters: a timing difference
    tells an attacker about a SHA-256 of their guess, not about any key."""

    def __init__(self, keys: Sequence[ApiKey], clock: Callable[[], float] = time.time) -> None:
        self.clock = clock
        self._static: dict[bytes, _Entry] = {
            digest(key.key): (key, _deadline(key, None), None) for key in keys
        }
        self.entries = self._static

    @property
    def enabled(self) -> bool:
        return bool(self.entries)

    def load(self, stored: Iterable[StoredKey]) -> None:
        """Replace the stored keys (in one assignment: a request sees the old or the new set)."""
        entries = dict(self._static)
        for key in stored:
            entries.update(_entries(key))
        self.entries = entries

    def check(self, headers: Mapping[str, str]) -> ApiKey | None:
        """The matching key; None when the gateway has no keys; AuthenticationFailed otherwise."""
        entries = self.entries
        if not entries:
            return None
        presented = _presented(headers)
        if presented is None:
            raise AuthenticationFailed("x-api-key header is required")
        entry = entries.get(digest(presented))
        if entry is None:
            raise AuthenticationFailed("invalid x-api-key")
        key, deadline, refusal = entry
        if refusal is not None:
            raise AuthenticationFailed(refusal)
        if deadline != math.inf and self.clock() >= deadline:
            raise AuthenticationFailed(_expired(key, deadline))
        return key


class KeyRefresh:
    """Keeps a KeyChecker within REFRESH_INTERVAL of the store; a store that fails keeps the last
    snapshot (logged), so an outage does not lock everyone out."""

    def __init__(
        self, store: KeyStore, checker: KeyChecker, interval: float = REFRESH_INTERVAL
    ) -> None:
        self.store = store
        self.checker = checker
        self.interval = interval
        self.generation: int | None = None
        self.task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self.reload()
        self.task = asyncio.create_task(self._loop())

    async def reload(self) -> None:
        self.generation, keys = await self.store.keys()
        self.checker.load(keys)

    async def refresh(self) -> None:
        """Reload if any key changed since the last load."""
        if await self.store.generation() != self.generation:
            await self.reload()

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            try:
                await self.refresh()
            except Exception as exc:
                error_log.warning("cannot refresh the keys from the store: %s", exc)

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
    refusal = None if stored.revoked_at is None else f"this key ({stored.name}) was revoked"
    for secret in stored.secrets:
        yield secret.digest, (key, _deadline(key, secret.valid_until), refusal)


def _deadline(key: ApiKey, valid_until: float | None) -> float:
    times = [t for t in (key.expires_at, valid_until) if t is not None]
    return min(times, default=math.inf)


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
