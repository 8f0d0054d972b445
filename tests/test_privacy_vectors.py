"""docs/privacy-protocol.md's test vectors, checked both ways against the codec."""

from __future__ import annotations

import base64
import re
from pathlib import Path
from typing import Any

import msgspec
import orjson
import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from messagegate.privacy.codec import (
    ANSWER_CLEAR,
    REQUEST,
    REQUEST_CLEAR,
    CodecError,
    ExchangeCipher,
    exchange_key,
    raw_fields,
    secret_id,
)
from messagegate.privacy.keys import GatewayKey, seal_secret

DOC = Path(__file__).resolve().parents[1] / "docs" / "privacy-protocol.md"


def vectors() -> dict[str, Any]:
    pattern = r"<!-- privacy-vectors:start -->\s*```json\n(.*?)```\s*<!-- privacy-vectors:end -->"
    match = re.search(pattern, DOC.read_text(), re.DOTALL)
    assert match, "docs/privacy-protocol.md has no vectors block"
    loaded: dict[str, Any] = orjson.loads(match.group(1))
    return loaded


V = vectors()
SECRET = bytes.fromhex(V["secret_hex"])
NONCE = bytes.fromhex(V["exchange_nonce_hex"])


def test_the_exchange_key_is_hkdf_sha256_of_secret_and_nonce() -> None:
    assert exchange_key(SECRET, NONCE).hex() == V["exchange_key_hex"]


@pytest.mark.parametrize(
    ("name", "clear"),
    [("request", REQUEST_CLEAR), ("answer", ANSWER_CLEAR), ("event", ANSWER_CLEAR)],
)
def test_sealing_gives_the_documented_bytes_and_opening_gives_the_plain_object(
    name: str, clear: frozenset[str]
) -> None:
    vector = V[name]
    cipher = ExchangeCipher(SECRET, NONCE)
    sealed = cipher.seal(vector["plain"], vector["direction"], vector["seq"], clear)
    assert orjson.dumps(sealed) == orjson.dumps(vector["sealed"])
    assert (
        cipher.open(vector["sealed"], vector["direction"], vector["seq"], clear) == vector["plain"]
    )
    with pytest.raises(CodecError):
        cipher.open(vector["sealed"], vector["direction"], vector["seq"] + 1, clear)


@pytest.mark.parametrize(
    ("name", "clear"),
    [("request", REQUEST_CLEAR), ("answer", ANSWER_CLEAR), ("event", ANSWER_CLEAR)],
)
def test_sealing_and_opening_json_bytes_unparsed_gives_the_documented_bytes(
    name: str, clear: frozenset[str]
) -> None:
    vector = V[name]
    cipher = ExchangeCipher(SECRET, NONCE)
    direction, seq = vector["direction"], vector["seq"]
    plain, sealed = orjson.dumps(vector["plain"]), orjson.dumps(vector["sealed"])
    assert cipher.seal_fields(raw_fields(plain), direction, seq, clear) == sealed
    assert cipher.open_fields(raw_fields(sealed), direction, seq, clear) == plain
    with pytest.raises(CodecError):
        cipher.open_fields(raw_fields(sealed), direction, seq + 1, clear)


@pytest.mark.parametrize("body", [b"[1]", b'"text"', b"{", b'{"a": 1} x', b""])
def test_raw_fields_refuses_what_is_not_one_json_object(body: bytes) -> None:
    with pytest.raises(msgspec.DecodeError):
        raw_fields(body)


def test_the_field_example_spells_out_nonce_and_aad() -> None:
    example = V["field_example"]
    aead = AESGCM(bytes.fromhex(V["exchange_key_hex"]))
    nonce, aad = bytes.fromhex(example["gcm_nonce_hex"]), bytes.fromhex(example["aad_hex"])
    sealed = aead.encrypt(nonce, example["plaintext"].encode(), aad)
    assert base64.b64encode(sealed).decode() == example["sealed_b64"]
    assert aead.decrypt(nonce, base64.b64decode(example["sealed_b64"]), aad) == b'"Be brief."'
    assert aad == b"mgp1" + bytes([REQUEST]) + (0).to_bytes(4) * 2 + (2).to_bytes(4) + b"system"


def test_the_hpke_vector_opens_to_the_secret_and_names_it() -> None:
    hpke = V["hpke"]
    key = GatewayKey.from_seeds(
        bytes.fromhex(hpke["mlkem768_seed_hex"]), bytes.fromhex(hpke["x25519_private_hex"]), 0
    )
    sealed = base64.b64decode(hpke["sealed_secret_b64"])
    assert key.key_id == hpke["key_id"]
    assert key.open_secret(sealed).hex() == hpke["secret_hex"]
    assert secret_id(sealed) == hpke["secret_id"]
    # The other direction is randomised: a fresh seal opens to the same secret, with another id.
    again = seal_secret(key.public_bytes, SECRET)
    assert key.open_secret(again) == SECRET
    assert secret_id(again) != hpke["secret_id"]
