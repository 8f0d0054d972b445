"""Reversible, stateless mapping of tool-call ids and tool names between clients and upstreams.

The gateway keeps nothing between requests, so every mapping is a pure function of its input:

- Client-facing ids must match ``^[a-zA-Z0-9_-]+$``. An upstream id that already does passes
  through unchanged; any other (``functions.Bash:0``) becomes ``toolu_mg_`` + base64url(id)
  without padding. Valid ids that happen to start with that prefix are encoded too, so decoding
  is exact. Ids the gateway never encoded decode to themselves.
- ``alnum9`` upstreams (Mistral) demand ids of exactly 9 letters and digits: other ids are sent
  as a hash of the id, so a tool_use and its tool_result still match each other.
- Tool names longer than the upstream allows become a prefix plus a short hash; the request's
  ``tools`` list (every request carries it) maps the upstream's answer back.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from messagegate.config.dialect import ToolCallIdFormat

ENCODED_ID_PREFIX = "toolu_mg_"
_VALID_ID = re.compile(r"[a-zA-Z0-9_-]+")
_ALNUM9 = re.compile(r"[a-zA-Z0-9]{9}")
_BASE62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
_NAME_HASH_LENGTH = 8


def new_tool_id() -> str:
    """An id for a tool call the upstream sent without one (hex, so never looks encoded)."""
    return "toolu_" + uuid.uuid4().hex[:24]


def client_tool_id(upstream_id: str | None) -> str:
    """The id the client sees for an upstream tool call."""
    if not upstream_id:
        return new_tool_id()
    if _VALID_ID.fullmatch(upstream_id) and not upstream_id.startswith(ENCODED_ID_PREFIX):
        return upstream_id
    encoded = base64.urlsafe_b64encode(upstream_id.encode()).decode().rstrip("=")
    return ENCODED_ID_PREFIX + encoded


def original_tool_id(client_id: str) -> str:
    """Undo ``client_tool_id``; an id the gateway did not encode comes back unchanged."""
    if not client_id.startswith(ENCODED_ID_PREFIX):
        return client_id
    encoded = client_id.removeprefix(ENCODED_ID_PREFIX)
    try:
        decoded = base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4)).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        return client_id
    # Only an exact re-encoding proves the gateway produced this id.
    return decoded if client_tool_id(decoded) == client_id else client_id


def upstream_tool_id(client_id: str, id_format: ToolCallIdFormat) -> str:
    """The id to send upstream for a client's tool_use / tool_result id."""
    original = original_tool_id(client_id)
    if id_format == "alnum9" and not _ALNUM9.fullmatch(original):
        return _alnum_hash(original, 9)
    return original


def _alnum_hash(text: str, length: int) -> str:
    number = int.from_bytes(hashlib.sha256(text.encode()).digest(), "big")
    digits = []
    for _ in range(length):
        number, digit = divmod(number, len(_BASE62))
        digits.append(_BASE62[digit])
    return "".join(digits)


def shorten_tool_name(name: str, max_length: int) -> str:
    """``name`` if it fits, else a prefix of it plus a hash of the whole (deterministic)."""
    if len(name) <= max_length:
        return name
    digest = hashlib.sha256(name.encode()).hexdigest()[:_NAME_HASH_LENGTH]
    keep = max(max_length - _NAME_HASH_LENGTH - 1, 1)
    return f"{name[:keep]}_{digest}"


@dataclass(frozen=True, slots=True)
class ToolNames:
    """Tool names as the upstream knows them, and the client's names that were shortened."""

    max_length: int = 64
    to_client: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def for_tools(cls, names: Iterable[str], max_length: int) -> ToolNames:
        long_names = (name for name in names if len(name) > max_length)
        return cls(max_length, {shorten_tool_name(n, max_length): n for n in long_names})

    def upstream(self, name: str) -> str:
        return shorten_tool_name(name, self.max_length)

    def client(self, name: str) -> str:
        """The client's name; names the client never sent (a hallucination) pass unchanged."""
        return self.to_client.get(name, name)
