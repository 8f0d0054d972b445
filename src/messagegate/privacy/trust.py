"""Whether the proxy may trust a gateway key: a pinned fingerprint, or an attestation verifier
(a plug-in, so that a TEE's quote verifier can be added) that accepts the served evidence."""

from __future__ import annotations

import importlib
from typing import Protocol

from messagegate.privacy.keys import fingerprint


class KeyNotTrusted(Exception):
    """The gateway's key is neither pinned nor attested: no prompt may be sealed to it."""


class AttestationVerifier(Protocol):
    def verify(self, evidence: bytes | None, public_key: bytes) -> bool:
        """Whether `evidence` proves that `public_key` (raw bytes) belongs to a trusted gateway."""
        ...


class KeyTrust(Protocol):
    def check(self, public_key: bytes, evidence: bytes | None) -> None:
        """Return if the key is trusted; raise KeyNotTrusted otherwise."""
        ...


class PinnedKeys:
    def __init__(self, pins: list[str]) -> None:
        self.pins = frozenset(pin.lower().removeprefix("sha256:") for pin in pins)

    def check(self, public_key: bytes, evidence: bytes | None) -> None:
        found = fingerprint(public_key)
        if found not in self.pins:
            raise KeyNotTrusted(f"the gateway's key {found} is not one of the pinned keys")


class AttestedKeys:
    def __init__(self, verifier: AttestationVerifier) -> None:
        self.verifier = verifier

    def check(self, public_key: bytes, evidence: bytes | None) -> None:
        if not self.verifier.verify(evidence, public_key):
            raise KeyNotTrusted(
                f"the attestation verifier refused the gateway's key {fingerprint(public_key)}"
            )


def load_verifier(spec: str) -> AttestationVerifier:
    """``module:name``: an attribute that, called without arguments, gives the verifier."""
    module_name, _, attribute = spec.partition(":")
    if not module_name or not attribute:
        raise ValueError(f"--attestation expects MODULE:NAME, got {spec!r}")
    factory = getattr(importlib.import_module(module_name), attribute)
    verifier: AttestationVerifier = factory()
    return verifier
