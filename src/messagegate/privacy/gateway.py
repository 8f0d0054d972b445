"""The gateway's side of privacy mode: the key document, secret registration, and per exchange
the opening of the request's fields and the sealing of the answer's (docs/privacy-protocol.md)."""

from __future__ import annotations

import base64
import binascii
import re
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import orjson
from cryptography.exceptions import InvalidTag

from messagegate.api.usage import Usage
from messagegate.config import PrivacySettings
from messagegate.errors import GatewayError, InvalidRequest, PrivacyRefused
from messagegate.privacy.codec import (
    ANSWER,
    ANSWER_CLEAR,
    NONCE_BYTES,
    REQUEST,
    REQUEST_CLEAR,
    VERSION,
    CodecError,
    ExchangeCipher,
    secret_id,
)
from messagegate.privacy.events import EventSealer
from messagegate.privacy.keys import SUITE_NAME, KeyStore
from messagegate.privacy.secrets import SecretStore
from messagegate.providers.base import EventStream
from messagegate.providers.connection import Channel

HEADER = "x-messagegate-privacy"
ANSWER_HEADERS = {HEADER: VERSION}
# A single- or double-quoted run of text: how validators and upstreams quote a value.
_QUOTED = re.compile(r"'[^']*'|\"[^\"]*\"")
# A registration is a key id and 1,168 bytes of base64: anything much larger is not one.
MAX_REGISTRATION_BYTES = 4096


class PrivacyGate:
    """One per gateway process, built at start (reading the key file and the evidence)."""

    def __init__(
        self,
        settings: PrivacySettings,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        assert settings.key_file is not None
        self.required = settings.mode == "required"
        self.keys = KeyStore(Path(settings.key_file), settings.rotation_grace, wall_clock)
        self.secrets = SecretStore(clock)
        evidence = Path(settings.evidence_file).read_bytes() if settings.evidence_file else None
        self.evidence = base64.b64encode(evidence).decode() if evidence is not None else None

    def key_document(self) -> dict[str, Any]:
        """``GET /v1/privacy/key``: the keys a secret may be sealed to, current first."""
        return {
            "version": VERSION,
            "suite": SUITE_NAME,
            "keys": [
                {
                    "key_id": key.key_id,
                    "public_key": base64.b64encode(key.public_bytes).decode(),
                    "retires_at": self.keys.retires_at(key),
                }
                for key in self.keys.accepting()
            ],
            "evidence": self.evidence,
        }

    def register(self, body: bytes) -> dict[str, Any]:
        """``POST /v1/privacy/secrets``: open a sealed secret and hold it for an hour."""
        try:
            data = orjson.loads(body)
            key_id, sealed = data["key_id"], base64.b64decode(data["sealed"], validate=True)
        except (orjson.JSONDecodeError, KeyError, TypeError, binascii.Error):
            raise InvalidRequest("a secret registration is {key_id, sealed}") from None
        key = next((k for k in self.keys.accepting() if k.key_id == key_id), None)
        if key is None:
            raise PrivacyRefused("unknown_key", "the key is unknown or retired")
        try:
            secret = key.open_secret(sealed)
        except (InvalidTag, ValueError):
            raise PrivacyRefused("bad_secret", "the sealed secret does not open") from None
        if len(secret) != 32:
            raise PrivacyRefused("bad_secret", "a secret is 32 bytes")
        ident = secret_id(sealed)
        entry = self.secrets.add(ident, secret)
        return {"secret_id": ident, "expires_in": entry.expires_at - self.secrets.clock()}

    def begin(self, headers: Mapping[str, str]) -> PrivateExchange | None:
        """The exchange's cipher when the request is encrypted; None for a plaintext one."""
        value = headers.get(HEADER)
        if value is None:
            if self.required:
                raise PrivacyRefused(
                    "required", "this gateway accepts only encrypted requests (messagegate proxy)"
                )
            return None
        version, _, rest = value.partition(".")
        ident, _, nonce_hex = rest.partition(".")
        try:
            nonce = bytes.fromhex(nonce_hex)
        except ValueError:
            nonce = b""
        if version != VERSION or len(nonce) != NONCE_BYTES:
            raise PrivacyRefused("bad_header", f"{HEADER} is not {VERSION}.SECRET_ID.NONCE")
        return PrivateExchange(ExchangeCipher(self.secrets.use(ident, nonce), nonce))


class PrivateExchange:
    """One encrypted exchange: its request opened once, its answer sealed."""

    __slots__ = ("cipher",)

    def __init__(self, cipher: ExchangeCipher) -> None:
        self.cipher = cipher

    def open_request(self, data: Any) -> dict[str, Any]:
        if not isinstance(data, dict):
            raise InvalidRequest("request body must be a JSON object")
        try:
            return self.cipher.open(data, REQUEST, 0, REQUEST_CLEAR)
        except CodecError as error:
            raise PrivacyRefused("decrypt_failed", str(error)) from None

    def seal_answer(self, body: dict[str, Any]) -> bytes:
        return orjson.dumps(self.cipher.seal(body, ANSWER, 0, ANSWER_CLEAR))

    def readable_error(self, error: GatewayError) -> GatewayError:
        """The error as the client sees it: its type and status, with every quoted value in its
        message masked (a validation or upstream message may quote the request); an upstream's
        own body is not relayed, the gateway's envelope is."""
        clear = GatewayError(_QUOTED.sub("'…'", error.message))
        clear.status, clear.error_type = error.status, error.error_type
        clear.headers = error.headers
        return clear

    def seal_stream(self, stream: EventStream) -> SealedStream:
        return SealedStream(stream, EventSealer(self.cipher))


class SealedStream:
    """An ``EventStream`` whose events leave sealed (each write is whole events)."""

    __slots__ = ("_seal", "_stream", "first", "headers", "usage")

    def __init__(self, stream: EventStream, sealer: EventSealer) -> None:
        self._stream = stream
        self._seal = sealer.seal
        self.first = sealer.seal(stream.first)
        self.headers: dict[str, str] = stream.headers
        self.usage: Usage = stream.usage

    @property
    def ended(self) -> bool:
        return self._stream.ended

    async def pipe(self, channel: Channel) -> None:
        await self._stream.pipe(_SealingChannel(channel, self._seal))

    def delivered_usage(self) -> Usage:
        return self._stream.delivered_usage()

    def pause_reading(self) -> None:
        self._stream.pause_reading()

    def resume_reading(self) -> None:
        self._stream.resume_reading()

    def close(self) -> None:
        self._stream.close()


class _SealingChannel:
    """A ``Channel`` that seals what it passes on."""

    __slots__ = ("_channel", "_seal")

    def __init__(self, channel: Channel, seal: Callable[[bytes], bytes]) -> None:
        self._channel = channel
        self._seal = seal

    def write(self, data: bytes) -> None:
        self._channel.write(self._seal(data))

    def end(self, last: bytes) -> None:
        self._channel.end(self._seal(last))
