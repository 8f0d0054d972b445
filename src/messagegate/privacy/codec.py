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
# A JSON object's fields as the bytes of their values, unparsed: what the proxy seals.
_RAW_FIELDS = msgspec.json.Decoder(dict[str, msgspec.Raw])
# base64 with SIMD (binascii's was a third of a 76 KB first turn's crypto); as strict as
# binascii's strict mode: padding, alphabet, nothing after the padding.
_b64encode = pybase64.b64encode
_b64encode_str = pybase64.b64encode_as_string
_b64decode = pybase64.b64decode


class CodecError(Exception):
    """A message that does not decrypt: tampered, replayed, reordered, dropped or malformed."""


def exchange_key(secret: bytes, nonce: bytes) -> bytes:
    """HKDF-SHA256 (RFC 5869) with the exchange's nonce as salt, one 32-byte block."""
    prk = hmac.digest(nonce, secret, "sha256")
    return hmac.digest(prk, _EXCHANGE_INFO, "sha256")


def secret_id(sealed: bytes) -> str:
    return hashlib.sha256(sealed).hexdigest()


RawFields = dict[str, msgspec.Raw]


def raw_fields(body: bytes) -> RawFields:
    """The fields of the JSON object `body` as their values' bytes, unparsed (their syntax is
    checked); ValueError if `body` is not one JSON object."""
    return _RAW_FIELDS.decode(body)


class ExchangeCipher:
    """One exchange's key: seals and opens the JSON objects of one direction, in sequence.

    `seal` and `open` take and give objects; `seal_fields` and `open_json` take and give JSON
    bytes, each field's value sealed or opened as the bytes it is, never parsed or serialised
    again (the proxy's path, and the gateway's for stream events): the same ciphertexts for
    the same JSON."""

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
            out[name] = _b64encode_str(encrypt(nonce, orjson.dumps(value), aad))
            index += 1
        return out

    def seal_fields(
        self, fields: RawFields, direction: int, seq: int, clear: frozenset[str]
    ) -> bytes:
        """The JSON object of `fields` (``raw_fields``), those outside `clear` sealed."""
        count = len(fields.keys() - clear)
        parts = []
        index = 0
        encrypt = self._aead.encrypt
        for name, value in fields.items():
            key = orjson.dumps(name)
            if name in clear:
                parts.append(b"%b:%b" % (key, value))
                continue
            nonce = _NONCE.pack(direction, seq, index)
            aad = _AAD.pack(_AAD_PREFIX, direction, seq, index, count) + name.encode()
            parts.append(b'%b:"%b"' % (key, _b64encode(encrypt(nonce, value, aad))))
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
                plain = decrypt(nonce, _b64decode(value, validate=True), aad)
            except (InvalidTag, ValueError):
                raise CodecError(f"field `{name}` does not decrypt") from None
            try:
                out[name] = orjson.loads(plain)
            except orjson.JSONDecodeError:
                raise CodecError(f"field `{name}` is not JSON") from None
            index += 1
        return out

    def open_fields(
        self, fields: RawFields, direction: int, seq: int, clear: frozenset[str]
    ) -> bytes:
        """The inverse of `seal_fields`: the JSON object of `fields`, each opened value as the
        bytes that were sealed (authenticated, so the gateway's own JSON), the clear ones as
        they are; CodecError names the first field that does not open."""
        count = len(fields.keys() - clear)
        parts = []
        index = 0
        decrypt = self._aead.decrypt
        for name, value in fields.items():
            key = orjson.dumps(name)
            if name in clear:
                parts.append(b"%b:%b" % (key, value))
                continue
            # base64 needs no JSON escape: a backslash inside the quotes fails its alphabet.
            sealed = bytes(value)
            if len(sealed) < 2 or sealed[0] != 0x22 or sealed[-1] != 0x22:
                raise CodecError(f"field `{name}` is not encrypted")
            nonce = _NONCE.pack(direction, seq, index)
            aad = _AAD.pack(_AAD_PREFIX, direction, seq, index, count) + name.encode()
            try:
                plain = decrypt(nonce, _b64decode(sealed[1:-1], validate=True), aad)
            except (InvalidTag, ValueError):
                raise CodecError(f"field `{name}` does not decrypt") from None
            parts.append(b"%b:%b" % (key, plain))
            index += 1
        return b"{" + b",".join(parts) + b"}"
