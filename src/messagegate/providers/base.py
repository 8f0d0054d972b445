"""What every upstream client offers routing: a completion, an event stream, a token count."""

from __future__ import annotations

from collections.abc import AsyncGenerator, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from messagegate.api.usage import Usage
from messagegate.config import Route


@dataclass(frozen=True, slots=True)
class UpstreamCall:
    """One attempt at one route: the validated client body and the client's API headers."""

    route: Route
    body: Mapping[str, Any]
    client_model: str
    headers: Mapping[str, str]
    # The client asked for the beta API (``?beta=true``); Anthropic upstreams get it too.
    beta: bool = False


@dataclass(slots=True)
class Completion:
    body: dict[str, Any]
    headers: dict[str, str]
    usage: Usage


@dataclass(slots=True)
class EventStream:
    """An upstream stream that has already produced its first event (so it can still fail over)."""

    headers: dict[str, str]
    first: bytes
    rest: AsyncGenerator[bytes, None]
    usage: Usage = field(default_factory=Usage)


class UpstreamClient(Protocol):
    async def complete(self, call: UpstreamCall) -> Completion: ...

    async def open_stream(self, call: UpstreamCall) -> EventStream: ...

    async def count_tokens(self, call: UpstreamCall) -> int: ...
