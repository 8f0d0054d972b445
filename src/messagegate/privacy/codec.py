"""The field codec of privacy mode (docs/privacy-protocol.md): AES-256-GCM over each top-level
JSON field outside a versioned allow-list, keyed per exchange, bound to its position. Pure."""

from __future__ import annotations

import binascii
import hashlib
import hmac
import struct
from typing import Any

import orjson
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from messagegate.config.routing_fields import ROUTING_FIELDS

VERSION = "v1"
SECRET_BYTES = 32
NONCE_BYTES = 16
# Fields the gateway must read to route and meter; everything else is ciphertext (version 1).
REQUEST_CLEAR = frozenset({"model", "stream", "max_tokens", *ROUTING_FIELDS})
ANSWER_CLEAR = frozenset({"id", "type", "model", "stop_reason", "usage"})
REQUEST = 0
ANSWER = 1
_EXCHANGE_INFO = b"messagegate privacy v1 exchange\x01"
_AAD_PREFIX = b"mgp1"
_NONCE = struct.Struct(">B3xII")
_AAD = struct.Struct(">4sBIII")


class CodecError(Exception):
    """A message that does not decrypt: tampered, replayed, reordered, dropped or malformed."""


def exchange_key(secret: bytes, nonce: bytes) -> bytes:
    """HKDF-SHA256 (RFC 5869) with the exchange's nonce as salt, one 32-byte block."""
    prk = hmac.digest(nonce, secret, "sha256")
    return hmac.digest(prk, _EXCHANGE_INFO, "sha256")


def secret_id(sealed: bytes) -> str:
    return hashlib.sha256(sealed).hexdigest()


class ExchangeCipher:
    """One exchange's key: seals and opens the JSON objects of one direction, in sequence."""

    __slots__ = ("_aead",)

    def __init__(self, secret: bytes, nonce: bytes) -> None:
        self._aead = AESGCM(exchange_key(secret, nonce))

    def seal(
        self, obj: dict[str, Any], direction: int, seq: int, clear: frozenset[str]
    ) -> dict[str, Any]:
        """`obj` with each field outside `clear` replaced by base64 of its sealed JSON value."""
        count = len(obj.keys() - clear)
        out: dict[str, Any] = {}
        index = 0
        encrypt = self._aead.encrypt
        for name, value in obj.items():
            if name in clear:
                out[name] = value
                continue
            nonce = _NONCE.pack(direction, seq, index)
            aad = _AAD.pack(_AAD_PREFIX, direction, seq, index, count) + name.encode()
            sealed = encrypt(nonce, orjson.dumps(value), aad)
            out[name] = binascii.b2a_base64(sealed, newline=False).decode("ascii")
            index += 1
        return out

    def open(
        self, obj: dict[str, Any], direction: int, seq: int, clear: frozenset[str]
    ) -> dict[str, Any]:
        """The inverse of `seal`; CodecError names the first field that does not open."""
        count = len(obj.keys() - clear)
        out: dict[str, Any] = {}
        index = 0
        decrypt = self._aead.decrypt
        for name, value in obj.items():
            if name in clear:
                out[name] = value
                continue
            if not isinstance(value, str):
                raise CodecError(f"field `{name}` is not encrypted")
            nonce = _NONCE.pack(direction, seq, index)
            aad = _AAD.pack(_AAD_PREFIX, direction, seq, index, count) + name.encode()
            try:
                out[name] = orjson.loads(
                    decrypt(nonce, binascii.a2b_base64(value, strict_mode=True), aad)
                )
            except (InvalidTag, ValueError):
                raise CodecError(f"field `{name}` does not decrypt") from None
            index += 1
        return out
