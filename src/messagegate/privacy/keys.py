"""The gateway's long-term HPKE keys (RFC 9180, ML-KEM-768 + X25519, HKDF-SHA256, AES-256-GCM):
the key file ``messagegate privacy keygen`` writes, and which keys accept new secrets."""

from __future__ import annotations

import base64
import hashlib
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from cryptography.hazmat.primitives import hpke
from cryptography.hazmat.primitives.asymmetric import mlkem, x25519

SUITE = hpke.Suite(hpke.KEM.MLKEM768_X25519, hpke.KDF.HKDF_SHA256, hpke.AEAD.AES_256_GCM)
SUITE_NAME = "MLKEM768-X25519/HKDF-SHA256/AES-256-GCM"
HPKE_INFO = b"messagegate privacy v1 secret"
MLKEM_PUBLIC_BYTES = 1184
X25519_BYTES = 32
# A key file holds at most this many keys: a rotation adds one and drops the retired ones.
MAX_KEYS = 16


class KeyFileError(Exception):
    """The key file is missing, unreadable or malformed."""


@dataclass(frozen=True, slots=True)
class GatewayKey:
    created_at: float
    # Never in a repr (a traceback or a log line must not show a private key).
    private: hpke.MLKEM768X25519PrivateKey = field(repr=False, compare=False)
    public_bytes: bytes = field(repr=False)
    seeds: tuple[bytes, bytes] = field(repr=False, compare=False)

    @property
    def key_id(self) -> str:
        return fingerprint(self.public_bytes)

    @classmethod
    def from_seeds(cls, mlkem_seed: bytes, x25519_seed: bytes, created_at: float) -> GatewayKey:
        kem = mlkem.MLKEM768PrivateKey.from_seed_bytes(mlkem_seed)
        dh = x25519.X25519PrivateKey.from_private_bytes(x25519_seed)
        public = kem.public_key().public_bytes_raw() + dh.public_key().public_bytes_raw()
        private = hpke.MLKEM768X25519PrivateKey(kem, dh)
        return cls(created_at, private, public, (mlkem_seed, x25519_seed))

    @classmethod
    def generate(cls, now: float) -> GatewayKey:
        return cls.from_seeds(os.urandom(64), os.urandom(32), now)

    def open_secret(self, sealed: bytes) -> bytes:
        return SUITE.decrypt(sealed, self.private, info=HPKE_INFO)


def fingerprint(public_bytes: bytes) -> str:
    """What ``messagegate proxy --pin`` compares: SHA-256 of the raw public key, in hex."""
    return hashlib.sha256(public_bytes).hexdigest()


def public_key(public_bytes: bytes) -> hpke.MLKEM768X25519PublicKey:
    """The HPKE public key from its raw bytes (ML-KEM-768's 1184, then X25519's 32)."""
    if len(public_bytes) != MLKEM_PUBLIC_BYTES + X25519_BYTES:
        raise ValueError("a public key is 1216 bytes")
    kem = mlkem.MLKEM768PublicKey.from_public_bytes(public_bytes[:MLKEM_PUBLIC_BYTES])
    dh = x25519.X25519PublicKey.from_public_bytes(public_bytes[MLKEM_PUBLIC_BYTES:])
    return hpke.MLKEM768X25519PublicKey(kem, dh)


def seal_secret(public_bytes: bytes, secret: bytes) -> bytes:
    """HPKE base-mode single-shot seal: enc (1120 bytes) followed by the ciphertext (48)."""
    return SUITE.encrypt(secret, public_key(public_bytes), info=HPKE_INFO)


def read_key_file(path: Path) -> list[GatewayKey]:
    try:
        raw: Any = orjson.loads(path.read_bytes())
        keys = [
            GatewayKey.from_seeds(
                base64.b64decode(item["mlkem768_seed"]),
                base64.b64decode(item["x25519_private"]),
                float(item["created_at"]),
            )
            for item in raw["keys"]
        ]
    except OSError as exc:
        raise KeyFileError(f"{path}: cannot read: {exc.strerror}") from None
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        raise KeyFileError(f"{path}: not a messagegate key file ({exc})") from None
    if not keys:
        raise KeyFileError(f"{path}: holds no key")
    return sorted(keys, key=lambda key: key.created_at, reverse=True)


def write_key_file(path: Path, keys: list[GatewayKey]) -> None:
    """Write atomically, readable by the owner only: the file holds private keys."""
    items = [
        {
            "created_at": key.created_at,
            "key_id": key.key_id,
            "mlkem768_seed": base64.b64encode(key.seeds[0]).decode(),
            "x25519_private": base64.b64encode(key.seeds[1]).decode(),
        }
        for key in keys
    ]
    temporary = path.with_name(path.name + ".tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(orjson.dumps({"version": 1, "keys": items}, option=orjson.OPT_INDENT_2))
    os.replace(temporary, path)


def rotate(path: Path, grace: float, now: float) -> GatewayKey:
    """Add a new current key to the file (creating it), dropping keys retired for good."""
    keys = read_key_file(path) if path.exists() else []
    new = GatewayKey.generate(now)
    kept = [key for index, key in enumerate(keys) if _accepting(keys, index, grace, now)]
    write_key_file(path, [new, *kept][:MAX_KEYS])
    return new


def _accepting(newest_first: list[GatewayKey], index: int, grace: float, now: float) -> bool:
    """A key accepts new secrets until `grace` seconds after the next newer key was made."""
    return index == 0 or now < newest_first[index - 1].created_at + grace


class KeyStore:
    """The key file's keys, read again when the file changes (a rotation needs no restart).

    Looked at only when a proxy fetches the key or registers a secret: never per request.
    """

    def __init__(self, path: Path, grace: float, clock: Callable[[], float] = time.time) -> None:
        self.path = path
        self.grace = grace
        self.clock = clock
        self._stamp: tuple[int, int] | None = None
        self._keys: list[GatewayKey] = []
        self.refresh()

    def refresh(self) -> None:
        try:
            stat = self.path.stat()
        except OSError as exc:
            raise KeyFileError(f"{self.path}: cannot read: {exc.strerror}") from None
        stamp = (stat.st_mtime_ns, stat.st_size)
        if stamp != self._stamp:
            self._keys = read_key_file(self.path)
            self._stamp = stamp

    def accepting(self) -> list[GatewayKey]:
        """The keys a new secret may be sealed to, the current one first."""
        self.refresh()
        now = self.clock()
        keys = self._keys
        return [key for index, key in enumerate(keys) if _accepting(keys, index, self.grace, now)]

    def retires_at(self, key: GatewayKey) -> float | None:
        index = self._keys.index(key)
        return None if index == 0 else self._keys[index - 1].created_at + self.grace
