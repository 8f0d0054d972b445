"""The ``<messagegate-model>NAME</messagegate-model>`` tag in the system prompt or the first user
turn (a sub-agent's definition can pin its model with it): found, and removed before upstream."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

OPEN = "<messagegate-model>"
_TAG = re.compile(r"<messagegate-model>\s*([^<>\s]{1,200})\s*</messagegate-model>\n?")


def take_tag(body: dict[str, Any]) -> str | None:
    """The first tag's name; every tag in those places is removed from `body`."""
    found: str | None = None
    for holder, key in _text_slots(body):
        text = holder[key]
        if OPEN not in text:
            continue
        match = _TAG.search(text)
        if match is None:
            continue
        if found is None:
            found = match.group(1)
        holder[key] = _TAG.sub("", text)
    return found


def _text_slots(body: dict[str, Any]) -> Iterator[tuple[Any, Any]]:
    """(container, key) of every string the tag may sit in: system, then the first user turn."""
    yield from _slots_of(body, "system")
    for message in body.get("messages") or ():
        if isinstance(message, dict) and message.get("role") == "user":
            yield from _slots_of(message, "content")
            return


def _slots_of(holder: dict[str, Any], key: str) -> Iterator[tuple[Any, Any]]:
    value = holder.get(key)
    if isinstance(value, str):
        yield holder, key
    elif isinstance(value, list):
        for block in value:
            if isinstance(block, dict) and isinstance(block.get("text"), str):
                yield block, "text"
