"""What every upstream client offers routing: a completion, an event stream, a token count."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from messagegate.api.usage import Usage
from messagegate.config import Route
from messagegate.providers.connection import Channel
from messagegate.translate.token_count import InputCount


@dataclass(frozen=True, slots=True)
class UpstreamCall:
    """One attempt at one route: the validated client body and the client's API headers."""

    route: Route
    body: Mapping[str, Any]
    client_model: str
    headers: Mapping[str, str]
    # The client asked for the beta API (``?beta=true``); Anthropic upstreams get it too.
    beta: bool = False
    # The request's local input counts, shared by every attempt (None: count afresh).
    input_count: InputCount | None = None


@dataclass(slots=True)
class Completion:
    body: dict[str, Any]
    headers: dict[str, str]
    usage: Usage


class EventStream(Protocol):
    """An upstream stream that has already produced its first client bytes (so it can still
    fail over); the rest is piped to the client as it arrives."""

    headers: dict[str, str]
    first: bytes
    usage: Usage

    @property
    def ended(self) -> bool:
        """Everything is in `first`."""
        ...

    async def pipe(self, channel: Channel) -> None:
        """Write the client bytes of each part to `channel` as it arrives, then end it with the
        last part's. Failures raise a GatewayError."""
        ...

    def delivered_usage(self) -> Usage:
        """The usage to bill when the client cut the stream: the output written so far, counted
        locally, never less than what the upstream reported by then."""
        ...

    def pause_reading(self) -> None:
        """Stop reading the upstream: the client is not keeping up."""
        ...

    def resume_reading(self) -> None: ...

    def close(self) -> None:
        """Stop reading and let go of the upstream, whatever state the stream is in."""
        ...


class UpstreamClient(Protocol):
    async def complete(self, call: UpstreamCall) -> Completion: ...

    async def open_stream(self, call: UpstreamCall) -> EventStream: ...

    async def count_tokens(self, call: UpstreamCall) -> int: ...
