"""Registered exchange secrets: in the gateway's memory only, each for an hour, each exchange
nonce accepted once."""

from __future__ import annotations

import time
from collections.abc import Callable

from messagegate.errors import PrivacyRefused

SECRET_LIFETIME = 3600.0
# Bounds on what proxies can make the gateway hold: secrets at once, exchanges per secret
# (each remembers its nonce, against replays, until the secret expires).
MAX_SECRETS = 10_000
MAX_EXCHANGES_PER_SECRET = 100_000


class SecretEntry:
    __slots__ = ("expires_at", "secret", "seen")

    def __init__(self, secret: bytes, expires_at: float) -> None:
        self.secret = secret
        self.expires_at = expires_at
        self.seen: set[bytes] = set()


class SecretStore:
    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self._entries: dict[str, SecretEntry] = {}

    def add(self, secret_id: str, secret: bytes) -> SecretEntry:
        """Register (a registration sent again gets the entry it made the first time)."""
        now = self.clock()
        entry = self._entries.get(secret_id)
        if entry is not None and entry.expires_at > now:
            return entry
        self._purge(now)
        if len(self._entries) >= MAX_SECRETS:
            raise PrivacyRefused("too_many_secrets", "the gateway holds too many secrets")
        entry = self._entries[secret_id] = SecretEntry(secret, now + SECRET_LIFETIME)
        return entry

    def use(self, secret_id: str, nonce: bytes) -> bytes:
        """The secret for a new exchange with `nonce`; refused if unknown, expired or replayed."""
        entry = self._entries.get(secret_id)
        if entry is None or entry.expires_at <= self.clock():
            raise PrivacyRefused("unknown_secret", "the secret is unknown or expired")
        if nonce in entry.seen:
            raise PrivacyRefused("replay", "this exchange nonce was used before (a replay)")
        if len(entry.seen) >= MAX_EXCHANGES_PER_SECRET:
            raise PrivacyRefused("unknown_secret", "the secret has served all its exchanges")
        entry.seen.add(nonce)
        return entry.secret

    def _purge(self, now: float) -> None:
        for secret_id in [i for i, e in self._entries.items() if e.expires_at <= now]:
            del self._entries[secret_id]

    def __len__(self) -> int:
        return len(self._entries)
