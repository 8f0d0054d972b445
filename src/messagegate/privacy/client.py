"""The proxy's side of privacy mode: trusting the gateway's key, registering a fresh secret
(renewed early, without a failed request), sealing requests and opening answers."""

from __future__ import annotations

import asyncio
import base64
import enum
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import orjson

from messagegate.privacy.codec import (
    ANSWER,
    ANSWER_CLEAR,
    NONCE_BYTES,
    REQUEST,
    REQUEST_CLEAR,
    SECRET_BYTES,
    VERSION,
    CodecError,
    ExchangeCipher,
    raw_fields,
)
from messagegate.privacy.events import EventOpener
from messagegate.privacy.keys import fingerprint, seal_secret
from messagegate.privacy.trust import KeyNotTrusted, KeyTrust

ERROR_HEADER = "x-messagegate-privacy-error"
# A secret is replaced this long before the gateway forgets it, so no request meets its end.
RENEW_MARGIN = 600.0

# (method, path, body) -> (status, headers, body) against the gateway
Call = Callable[[str, str, bytes], Awaitable[tuple[int, dict[str, str], bytes]]]


class SessionState(enum.Enum):
    NEW = "new"  # no trusted key yet
    TRUSTED = "trusted"  # the key is trusted; no secret registered
    READY = "ready"  # a secret is registered and fresh


class GatewayRefused(Exception):
    """The gateway refused the key fetch or a registration (status and body kept)."""

    def __init__(self, status: int, headers: dict[str, str], body: bytes) -> None:
        super().__init__(f"the gateway answered {status} {body[:300]!r}")
        self.status = status
        self.code = headers.get(ERROR_HEADER)
        self.body = body


@dataclass(frozen=True, slots=True)
class RegisteredSecret:
    secret_id: str
    secret: bytes = field(repr=False)
    renew_at: float = 0.0


class PrivacySession:
    """One per proxy: the trusted key and the current secret, with their transitions."""

    def __init__(
        self, call: Call, trust: KeyTrust, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.call = call
        self.trust = trust
        self.clock = clock
        self.state = SessionState.NEW
        self.key: tuple[str, bytes] | None = None
        self.current: RegisteredSecret | None = None
        self._lock = asyncio.Lock()

    async def start(self) -> None:
        """Trust the key and register a secret before any request is taken (fails loudly)."""
        await self.renew(stale=None)

    async def secret(self) -> RegisteredSecret:
        current = self.current
        if current is not None and self.clock() < current.renew_at:
            return current
        return await self.renew(stale=current)

    async def renew(self, stale: RegisteredSecret | None) -> RegisteredSecret:
        """A secret other than `stale`; concurrent callers share one registration."""
        async with self._lock:
            current = self.current
            if current is not None and current is not stale and self.clock() < current.renew_at:
                return current
            if self.state is SessionState.NEW:
                await self._fetch_key()
            try:
                registered = await self._register()
            except GatewayRefused as refused:
                if refused.code != "unknown_key":
                    raise
                # The key was rotated out: fetch (and trust) the new one, once.
                self._transition(SessionState.NEW)
                await self._fetch_key()
                registered = await self._register()
            self.current = registered
            self._transition(SessionState.READY)
            return registered

    @property
    def key_id(self) -> str | None:
        return self.key[0] if self.key is not None else None

    def _transition(self, state: SessionState) -> None:
        if state is SessionState.NEW:
            self.key, self.current = None, None
        self.state = state

    async def _fetch_key(self) -> None:
        status, headers, body = await self.call("GET", "/v1/privacy/key", b"")
        if status != 200:
            raise GatewayRefused(status, headers, body)
        document = orjson.loads(body)
        if document.get("version") != VERSION or not document.get("keys"):
            raise KeyNotTrusted(f"the gateway serves no {VERSION} privacy key")
        key = document["keys"][0]
        public = base64.b64decode(key["public_key"])
        evidence = document.get("evidence")
        self.trust.check(public, base64.b64decode(evidence) if evidence else None)
        # The id is the fingerprint of what was trusted, not what the document claims.
        self.key = (fingerprint(public), public)
        self._transition(SessionState.TRUSTED)

    async def _register(self) -> RegisteredSecret:
        assert self.key is not None
        key_id, public = self.key
        secret = os.urandom(SECRET_BYTES)
        sealed = seal_secret(public, secret)
        payload = {"key_id": key_id, "sealed": base64.b64encode(sealed).decode()}
        started = self.clock()
        status, headers, body = await self.call(
            "POST", "/v1/privacy/secrets", orjson.dumps(payload)
        )
        if status != 200:
            raise GatewayRefused(status, headers, body)
        answer = orjson.loads(body)
        renew_at = started + max(0.0, float(answer["expires_in"]) - RENEW_MARGIN)
        return RegisteredSecret(answer["secret_id"], secret, renew_at)


class SealedExchange:
    """One request's sealing and its answer's opening, under a fresh exchange nonce."""

    __slots__ = ("cipher", "header")

    def __init__(self, registered: RegisteredSecret) -> None:
        nonce = os.urandom(NONCE_BYTES)
        self.cipher = ExchangeCipher(registered.secret, nonce)
        self.header = f"{VERSION}.{registered.secret_id}.{nonce.hex()}"

    def seal_request(self, body: bytes) -> bytes:
        """The sealed body; ValueError if `body` is not a JSON object."""
        return self.cipher.seal_fields(raw_fields(body), REQUEST, 0, REQUEST_CLEAR)

    def open_answer(self, body: bytes) -> bytes:
        try:
            fields = raw_fields(body)
        except ValueError:
            raise CodecError("the answer is not a JSON object") from None
        return self.cipher.open_fields(fields, ANSWER, 0, ANSWER_CLEAR)

    def event_opener(self) -> EventOpener:
        return EventOpener(self.cipher)
