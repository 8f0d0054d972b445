"""The ``<messagegate-model>NAME</messagegate-model>`` tag in the system prompt or the first user
turn (a sub-agent's definition can pin its model with it): found, and removed before upstream."""

from __future__ import annotations

import re
from typing import Any

OPEN = "<messagegate-model>"
_TAG = re.compile(r"<messagegate-model>\s*([^<>\s]{1,200})\s*</messagegate-model>\n?")


def take_tag(body: dict[str, Any]) -> str | None:
    """The first tag's name; every tag in those places is removed from `body`."""
    found = _take(body, "system", None)
    for message in body.get("messages") or ():
        if isinstance(message, dict) and message.get("role") == "user":
            return _take(message, "content", found)
    return found


def _take(holder: dict[str, Any], key: str, found: str | None) -> str | None:
    """`holder[key]`, a string or a list of text blocks, without its tags; the first tag's name."""
    value = holder.get(key)
    if isinstance(value, str):
        if OPEN in value:
            holder[key], found = _without_tags(value, found)
    elif isinstance(value, list):
        for block in value:
            text = block.get("text") if isinstance(block, dict) else None
            if isinstance(text, str) and OPEN in text:
                block["text"], found = _without_tags(text, found)
    return found


def _without_tags(text: str, found: str | None) -> tuple[str, str | None]:
    match = _TAG.search(text)
    if match is None:
        return text, found
    return _TAG.sub("", text), found if found is not None else match.group(1)
