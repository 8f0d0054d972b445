"""The key verbs the `keys` commands and the admin API share: create, list, show, update, revoke,
rotate. A new key's secret is returned once and stored only as its hash."""

from __future__ import annotations

import re
import secrets
import time
from collections.abc import Callable, Mapping
from typing import Any

from messagegate.config.keyspec import KEY_FIELDS, iso_time, parse_key_settings, settings_json
from messagegate.store.base import KeyStore, StoredKey, StoredSecret, StoreError, UnknownKey, digest

KEY_PREFIX = "mg-"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$")
# How many characters of a key listings show (the prefix, then 6 random ones).
_SHOWN = len(KEY_PREFIX) + 6
MAX_GRACE_SECONDS = 90 * 86400


class KeyAdmin:
    def __init__(
        self,
        store: KeyStore,
        *,
        reserved: frozenset[str] = frozenset(),
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        # Names of the config file's static keys, which a stored key may not take.
        self.reserved = reserved
        self.clock = clock

    async def create(self, name: str, fields: Mapping[str, Any]) -> tuple[str, StoredKey]:
        """The new key's secret (shown once) and its record."""
        if not _NAME.match(name):
            raise StoreError(f"invalid key name {name!r}: letters, digits and . _ @ -, at most 64")
        if name in self.reserved:
            raise StoreError(f"the config file has a key named {name!r}")
        settings = parse_key_settings(_known(fields))
        secret, stored = self._secret()
        await self.store.insert(name, settings, stored)
        return secret, await self.show(name)

    async def list(self) -> list[StoredKey]:
        _, keys = await self.store.keys()
        return sorted(keys, key=lambda k: (k.created_at, k.name))

    async def show(self, name: str) -> StoredKey:
        key = await self.store.key(name)
        if key is None:
            raise UnknownKey(f"no key named {name!r}")
        return key

    async def update(self, name: str, changes: Mapping[str, Any]) -> StoredKey:
        """Change the settings named in `changes`; a None value removes that setting."""
        current = settings_json((await self.show(name)).settings)
        merged = {k: v for k, v in {**current, **_known(changes)}.items() if v is not None}
        await self.store.update(name, parse_key_settings(merged))
        return await self.show(name)

    async def revoke(self, name: str) -> StoredKey:
        await self.store.revoke(name, self.clock())
        return await self.show(name)

    async def rotate(self, name: str, grace: float) -> tuple[str, StoredKey]:
        """A new secret; the old one keeps working for `grace` seconds."""
        if not 0 <= grace <= MAX_GRACE_SECONDS:
            raise StoreError(
                f"the grace period must be from 0 to {MAX_GRACE_SECONDS // 86400} days"
            )
        secret, stored = self._secret()
        await self.store.rotate(name, stored, self.clock() + grace)
        return secret, await self.show(name)

    def _secret(self) -> tuple[str, StoredSecret]:
        secret = KEY_PREFIX + secrets.token_urlsafe(32)
        return secret, StoredSecret(digest(secret), secret[:_SHOWN], self.clock())


def describe(key: StoredKey, now: float) -> dict[str, Any]:
    """A key as listings and the admin API show it (never its secret, which is not stored)."""
    live = [s for s in key.secrets if s.valid_until is None or s.valid_until > now]
    return {
        "name": key.name,
        "status": status(key, now),
        "prefixes": [s.prefix + "…" for s in live],
        "created_at": iso_time(key.created_at),
        "revoked_at": None if key.revoked_at is None else iso_time(key.revoked_at),
        **settings_json(key.settings),
    }


def status(key: StoredKey, now: float) -> str:
    if key.revoked_at is not None:
        return "revoked"
    expires = key.settings.expires_at
    return "expired" if expires is not None and expires <= now else "active"


def _known(fields: Mapping[str, Any]) -> dict[str, Any]:
    unknown = sorted(set(fields) - KEY_FIELDS)
    if unknown:
        raise StoreError(
            f"unknown key setting {unknown[0]!r} (known: {', '.join(sorted(KEY_FIELDS))})"
        )
    return dict(fields)
