"""What the previous turn of each Claude Code session reported as its input, in a bounded LRU."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping
from typing import Any

import orjson

from messagegate.api.usage import Usage

# Sessions are peer-chosen ids: the memory keeps the most recently seen ones only.
DEFAULT_SESSIONS_MAX = 10_000
# Longer ids are not Claude Code's and are not remembered.
_SESSION_ID_MAX = 200


def session_id(body: Mapping[str, Any]) -> str | None:
    """The session in ``metadata.user_id``: the JSON string Claude Code sends now
    (``{"session_id": …}``) or its older ``user_…_account_…_session_<id>`` form."""
    metadata = body.get("metadata")
    user_id = metadata.get("user_id") if isinstance(metadata, dict) else None
    if not isinstance(user_id, str) or not user_id:
        return None
    if user_id[0] == "{":
        try:
            decoded = orjson.loads(user_id)
        except orjson.JSONDecodeError:
            return None
        found = decoded.get("session_id") if isinstance(decoded, dict) else None
    else:
        found = user_id.rpartition("_session_")[2] if "_session_" in user_id else None
    if not isinstance(found, str) or not found or len(found) > _SESSION_ID_MAX:
        return None
    return found


def reported_input(usage: Usage) -> int:
    """All the input a turn carried: cached prefixes count toward the context too."""
    return usage.input_tokens + usage.cache_read_input_tokens + usage.cache_creation_input_tokens


class SessionMemory:
    """The input tokens the last answered turn of each session reported."""

    __slots__ = ("_last", "capacity")

    def __init__(self, capacity: int = DEFAULT_SESSIONS_MAX) -> None:
        self.capacity = capacity
        self._last: OrderedDict[str, int] = OrderedDict()

    def last_input(self, session: str) -> int | None:
        tokens = self._last.get(session)
        if tokens is not None:
            self._last.move_to_end(session)
        return tokens

    def remember(self, session: str, tokens: int) -> None:
        self._last[session] = tokens
        self._last.move_to_end(session)
        if len(self._last) > self.capacity:
            self._last.popitem(last=False)

    def __len__(self) -> int:
        return len(self._last)
