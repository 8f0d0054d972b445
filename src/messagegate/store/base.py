"""What a key store holds and the Protocol every backend implements."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any, Protocol

from messagegate.config.keyspec import KeySettings
from messagegate.ledger.row import SUMMED_COLUMNS, Batch

USAGE_GROUPS = ("key", "model", "provider", "day")
USAGE_SUMS = ("requests", *SUMMED_COLUMNS)


class StoreError(Exception):
    """A key store operation failed; the message says why, for the operator."""


class StoreUnavailable(StoreError):
    """The database could not be reached (or did not answer in time): retrying later may work."""


class KeyExists(StoreError):
    pass


class UnknownKey(StoreError):
    pass


def digest(secret: str) -> bytes:
    """A key as it is stored: its SHA-256 (keys are random, 256 bits: no salt or stretching)."""
    return hashlib.sha256(secret.encode()).digest()


@dataclass(frozen=True, slots=True)
class StoredSecret:
    digest: bytes
    # The key's first characters, to tell keys apart in listings.
    prefix: str
    created_at: float
    # A rotated-out secret stays valid until then; None: until rotated or revoked.
    valid_until: float | None = None


@dataclass(frozen=True, slots=True)
class StoredKey:
    name: str
    settings: KeySettings
    created_at: float
    revoked_at: float | None
    secrets: tuple[StoredSecret, ...]


class KeyStore(Protocol):
    async def generation(self) -> int:
        """A number that changes whenever any key changes (the refresh's cheap question)."""

    async def wait_for_change(self, at_most: float) -> None:
        """Return after `at_most` seconds, or sooner once another process may have changed a key."""

    async def keys(self) -> tuple[int, list[StoredKey]]:
        """The generation and every key, revoked ones included."""

    async def key(self, name: str) -> StoredKey | None: ...

    async def insert(self, name: str, settings: KeySettings, secret: StoredSecret) -> None:
        """KeyExists if the name is taken (by a revoked key too)."""

    async def update(self, name: str, settings: KeySettings) -> None:
        """UnknownKey if there is none by that name."""

    async def revoke(self, name: str, now: float) -> None:
        """UnknownKey if there is none by that name (or it is revoked already)."""

    async def rotate(self, name: str, secret: StoredSecret, old_valid_until: float) -> None:
        """Add `secret`; the key's other secrets stay valid until `old_valid_until` at most."""

    async def close(self) -> None: ...


class LedgerStore(Protocol):
    async def ship(self, batch: Batch) -> int:
        """Insert the rows not inserted before (by request id); how many were new."""

    async def usage(self, by: str, since_day: str) -> list[dict[str, Any]]:
        """Totals by key, model, provider or day, from the daily rollups, since a UTC day."""

    async def spent(self, key: str, since_day: str) -> int:
        """The key's cost in micro-USD from the daily rollups, since a UTC day."""

    async def spend_by_key(self) -> dict[str, int]:
        """Each key's cost in micro-USD over the whole ledger, from the daily rollups."""


class Store(KeyStore, LedgerStore, Protocol):
    """What the gateway opens: keys and the ledger in one database."""
