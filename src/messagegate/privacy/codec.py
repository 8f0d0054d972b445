"""The field codec of privacy mode (docs/privacy-protocol.md): AES-256-GCM over each top-level
JSON field outside a versioned allow-list, keyed per exchange, bound to its position. Pure."""

from __future__ import annotations

import hashlib
import hmac
import struct
from typing import Any

import msgspec
import orjson
import pybase64
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from messagegate.api.schema import ROUTING_FIELDS

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
# A JSON object's fields as the bytes of their values, unparsed: what the proxy seals.
_RAW_FIELDS = msgspec.json.Decoder(dict[str, msgspec.Raw])
# base64 with SIMD (binascii's was a third of a 76 KB first turn's crypto); as strict as
# binascii's strict mode: padding, alphabet, nothing after the padding.
_b64encode = pybase64.b64encode
_b64decode = pybase64.b64decode


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
            out[name] = _b64encode(sealed).decode("ascii")
            index += 1
        return out

    def seal_json(self, body: bytes, direction: int, seq: int, clear: frozenset[str]) -> bytes:
        """`seal` of the JSON object `body`, whose field values are sealed as the bytes they are
        in `body`, never parsed (the gateway parses what it opens). ValueError if `body` is not
        a JSON object."""
        try:
            fields = _RAW_FIELDS.decode(body)
        except msgspec.DecodeError as exc:
            raise ValueError(str(exc)) from None
        count = len(fields.keys() - clear)
        parts = []
        index = 0
        encrypt = self._aead.encrypt
        for name, value in fields.items():
            key = orjson.dumps(name)
            if name in clear:
                parts.append(key + b":" + bytes(value))
                continue
            nonce = _NONCE.pack(direction, seq, index)
            aad = _AAD.pack(_AAD_PREFIX, direction, seq, index, count) + name.encode()
            parts.append(key + b':"' + _b64encode(encrypt(nonce, bytes(value), aad)) + b'"')
            index += 1
        return b"{" + b",".join(parts) + b"}"

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
                out[name] = orjson.loads(decrypt(nonce, _b64decode(value, validate=True), aad))
            except (InvalidTag, ValueError):
                raise CodecError(f"field `{name}` does not decrypt") from None
            index += 1
        return out
