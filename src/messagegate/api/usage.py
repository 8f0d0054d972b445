"""Token usage of one answer, as the Messages API reports it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(slots=True)
class Usage:
    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_input_tokens: int = 0
    cache_creation_input_tokens: int = 0
    # The part of cache_creation_input_tokens written for 1 hour (priced apart from 5 minutes).
    cache_creation_1h_input_tokens: int = 0
    estimated: bool = False

    def update(self, reported: dict[str, Any]) -> None:
        """Take the counts an Anthropic ``usage`` object carries; absent keys keep theirs."""
        for key in _COUNTS:
            value = reported.get(key)
            if isinstance(value, int):
                setattr(self, key, value)
        split = reported.get("cache_creation")
        if isinstance(split, dict):
            hour = split.get("ephemeral_1h_input_tokens")
            if isinstance(hour, int):
                self.cache_creation_1h_input_tokens = hour


_COUNTS = (
    "input_tokens",
    "output_tokens",
    "cache_read_input_tokens",
    "cache_creation_input_tokens",
)
