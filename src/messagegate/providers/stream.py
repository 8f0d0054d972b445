"""Reading an upstream SSE response: first-event priming, idle timeout, per-dialect conversion."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator
from typing import Protocol

from messagegate.api.usage import Usage
from messagegate.config import Provider
from messagegate.errors import UpstreamProtocolError
from messagegate.providers.base import EventStream
from messagegate.providers.http import relayed_headers, upstream_errors
from messagegate.providers.pool import UpstreamResponse
from messagegate.translate.sse_decoder import ServerSentEvent, SSEDecoder


class EventConverter(Protocol):
    """Turns upstream SSE events into the client's Anthropic SSE bytes."""

    usage: Usage

    def convert(self, event: ServerSentEvent) -> bytes: ...

    def whole_event(self, chunk: bytes) -> bytes | None:
        """The client bytes of a chunk that starts at an event boundary and is exactly one event
        in the usual form, found without the decoder; None to decode it the general way."""
        ...

    def finish(self) -> bytes:
        """The upstream ended; raise a GatewayError if it ended too early."""
        ...


async def open_event_stream(
    response: UpstreamResponse, provider: Provider, converter: EventConverter
) -> EventStream:
    """Read until the first client bytes exist, so a failure so far can still be failed over."""
    events = _relay(response, provider, converter)
    try:
        with upstream_errors(provider):
            async with asyncio.timeout(provider.timeouts.first_byte):
                first = await anext(events)
    except StopAsyncIteration:
        raise UpstreamProtocolError(f"provider {provider.name!r} sent an empty stream") from None
    except BaseException:
        await events.aclose()
        raise
    # After the first event the read timeout becomes the idle gap allowed between reads.
    response.set_read_timeout(provider.timeouts.idle)
    return EventStream(
        headers=relayed_headers(response.headers), first=first, rest=events, usage=converter.usage
    )


async def _relay(
    response: UpstreamResponse, provider: Provider, converter: EventConverter
) -> AsyncGenerator[bytes, None]:
    """Yield the client bytes of each upstream chunk that completes at least one event."""
    decoder = SSEDecoder()
    decode, convert, whole_event = decoder.feed, converter.convert, converter.whole_event
    try:
        with upstream_errors(provider):
            while chunk := await response.read_chunk():
                out = whole_event(chunk) if decoder.between_events else None
                if out is not None:
                    if out:
                        yield out
                    continue
                events = decode(chunk)
                # Most chunks complete exactly one event: no list and join for those.
                out = convert(events[0]) if len(events) == 1 else b"".join(map(convert, events))
                if out:
                    yield out
    except BaseException:
        response.close()  # read only in part: the connection can't be reused
        raise
    # Fully read: the connection goes back to the pool.
    response.release()
    yield b"".join(map(convert, decoder.finish())) + converter.finish()
