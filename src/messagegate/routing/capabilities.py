"""What a request needs of a route, and what a route lacks for it: the pre-flight before sending.

The pre-flight only skips routes; it never changes a value (``max_tokens`` above a route's
``max_output`` is clamped by the translation, as documented, not here).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from messagegate.config import Capabilities
from messagegate.translate.structured_output import output_format

_THINKING_ON = frozenset({"enabled", "adaptive"})


@dataclass(slots=True)  # not frozen: a frozen one sets each field via object.__setattr__
class Needs:
    temperature: float | None
    stop_sequences: int
    tools: bool
    thinking: bool
    structured_output: bool
    vision: bool
    pdf: bool


def floor(capabilities: Iterable[Capabilities]) -> Capabilities:
    """What every one of these routes can take: a request within it needs no closer look."""
    every = list(capabilities)
    stops = [c.max_stop_sequences for c in every if c.max_stop_sequences is not None]
    return Capabilities(
        vision=all(c.vision for c in every),
        pdf=all(c.pdf for c in every),
        tools=all(c.tools for c in every),
        thinking=all(c.thinking for c in every),
        structured_output=all(c.structured_output for c in every),
        max_stop_sequences=min(stops) if stops else None,
        temperature_max=min((c.temperature_max for c in every), default=2.0),
    )


def within(least: Capabilities, body: Mapping[str, Any]) -> bool:
    """Does the request stay within `least`? The usual request does, after two or three lookups:
    this runs for every request, so what every route can take is not looked at."""
    temperature = body.get("temperature")
    if temperature is not None and temperature > least.temperature_max:
        return False
    most = least.max_stop_sequences
    if most is not None and len(body.get("stop_sequences") or ()) > most:
        return False
    if not (
        least.tools and least.thinking and least.structured_output and least.vision and least.pdf
    ):
        return shortfall(least, needs_of(body, scan_media=True)) is None
    return True


def needs_of(body: Mapping[str, Any], scan_media: bool) -> Needs:
    """What serving `body` takes; images and PDFs are looked for only when some route lacks them."""
    thinking = body.get("thinking")
    vision = pdf = False
    if scan_media:
        vision, pdf = _media(body.get("messages") or ())
    return Needs(
        temperature=body.get("temperature"),
        stop_sequences=len(body.get("stop_sequences") or ()),
        tools=bool(body.get("tools")),
        thinking=isinstance(thinking, dict) and thinking.get("type") in _THINKING_ON,
        structured_output=output_format(body) is not None,
        vision=vision,
        pdf=pdf,
    )


def shortfall(capabilities: Capabilities, needs: Needs) -> str | None:
    """What the route lacks for this request, worded for the client; None when it can serve it."""
    c, n = capabilities, needs
    # The usual answer, in one expression: this runs for every candidate route of every request.
    if (
        (n.temperature is None or n.temperature <= c.temperature_max)
        and (c.max_stop_sequences is None or n.stop_sequences <= c.max_stop_sequences)
        and (c.tools or not n.tools)
        and (c.thinking or not n.thinking)
        and (c.structured_output or not n.structured_output)
        and (c.vision or not n.vision)
        and (c.pdf or not n.pdf)
    ):
        return None
    return _lacking(c, n)


def _lacking(capabilities: Capabilities, needs: Needs) -> str:
    lacking = []
    limit = capabilities.temperature_max
    if needs.temperature is not None and needs.temperature > limit:
        lacking.append(f"temperature {needs.temperature} > {limit}")
    most = capabilities.max_stop_sequences
    if most is not None and needs.stop_sequences > most:
        lacking.append(f"{needs.stop_sequences} stop_sequences > {most}")
    for name in ("tools", "thinking", "structured_output", "vision", "pdf"):
        if getattr(needs, name) and not getattr(capabilities, name):
            lacking.append(f"no {name}")
    return ", ".join(lacking)


def _media(messages: Any) -> tuple[bool, bool]:
    """(any image, any PDF) in the conversation, tool results included: one tight loop, since it
    runs over every block of every request that a route without vision or PDFs might serve."""
    vision = pdf = False
    for message in messages:
        content = message["content"]
        if content.__class__ is not list:
            continue
        for block in content:
            kind = block.get("type")
            if kind == "text" or kind == "tool_use":
                continue
            if kind == "image":
                vision = True
            elif kind == "document":
                pdf = pdf or _is_pdf(block.get("source"))
            elif kind == "tool_result" and block.get("content").__class__ is list:
                found = _media([{"content": block["content"]}])
                vision, pdf = vision or found[0], pdf or found[1]
    return vision, pdf


def _is_pdf(source: Any) -> bool:
    """Text documents (a ``text`` or ``content`` source) are text to every route; others are not."""
    return isinstance(source, dict) and source.get("type") in ("base64", "url", "file")
