"""Signatures the gateway mints for thinking blocks whose reasoning Anthropic did not sign."""

from __future__ import annotations

import secrets

# Anthropic's signatures are standard base64, which never contains ".", so no real one can match.
GATEWAY_SIGNATURE_PREFIX = "mg0."


def gateway_signature() -> str:
    """A fresh signature for reasoning from a non-Anthropic upstream."""
    return GATEWAY_SIGNATURE_PREFIX + secrets.token_urlsafe(24)


def is_gateway_signature(signature: str) -> bool:
    """Whether the gateway minted this signature (so an Anthropic upstream would reject it)."""
    return signature.startswith(GATEWAY_SIGNATURE_PREFIX)
