"""Gateway keys, as ``x-api-key`` or ``Authorization: Bearer``, compared in constant time."""

from __future__ import annotations

import hmac
from collections.abc import Mapping, Sequence

from messagegate.config import ApiKey
from messagegate.errors import AuthenticationFailed


class KeyChecker:
    def __init__(self, keys: Sequence[ApiKey]) -> None:
        self.keys = [(key.key.encode(), key) for key in keys]

    @property
    def enabled(self) -> bool:
        return bool(self.keys)

    def check(self, headers: Mapping[str, str]) -> ApiKey | None:
        """The matching key; None when the gateway has no keys; AuthenticationFailed otherwise."""
        if not self.keys:
            return None
        presented = _presented(headers)
        if presented is None:
            raise AuthenticationFailed("x-api-key header is required")
        candidate = presented.encode()
        found: ApiKey | None = None
        # Every key is compared, so timing does not tell which one (or whether any) matched.
        for secret, key in self.keys:
            if hmac.compare_digest(secret, candidate):
                found = key
        if found is None:
            raise AuthenticationFailed("invalid x-api-key")
        return found


def _presented(headers: Mapping[str, str]) -> str | None:
    key = headers.get("x-api-key")
    if key:
        return key
    authorization = headers.get("authorization", "")
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    return None
