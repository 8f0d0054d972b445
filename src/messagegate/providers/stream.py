"""Reading an upstream SSE response: the first event awaited, the rest piped as it arrives.

Only I/O lives here: the translation is the relay's (``translate/stream_relay.py``), fed each
chunk as it comes.
"""

from __future__ import annotations

import asyncio

from messagegate.api.usage import Usage
from messagegate.config import Provider
from messagegate.errors import GatewayError, UpstreamProtocolError
from messagegate.providers.connection import Channel
from messagegate.providers.http import Scrubber, relayed_headers, upstream_errors
from messagegate.providers.pool import UpstreamResponse
from messagegate.translate.stream_relay import SSERelay


class UpstreamEventStream:
    """An upstream stream whose first client bytes exist (so far it could still fail over)."""

    def __init__(
        self,
        response: UpstreamResponse,
        provider: Provider,
        relay: SSERelay,
        first: bytes,
        scrubber: Scrubber,
        failure: GatewayError | None = None,
    ) -> None:
        self.headers = relayed_headers(response.headers)
        self.first = first
        self.usage = relay.usage
        self._response = response
        self._provider = provider
        self._relay = relay
        self._scrubber = scrubber
        # How the upstream's end, already read, failed: raised by `pipe`, after `first` went out.
        self._failure = failure

    @property
    def ended(self) -> bool:
        """The whole stream is in `first`: nothing is left to pipe."""
        return self._relay.ended and self._failure is None

    async def pipe(self, channel: Channel) -> None:
        """Write the client bytes of each upstream chunk to `channel` as it arrives, from the
        socket's callback, then end it with those of the upstream's end. A failure raises a
        GatewayError."""
        if self._failure is not None:
            raise self._failure
        try:
            with upstream_errors(self._provider):
                try:
                    await self._response.pipe(self._relay, channel)
                except BaseException:
                    self._response.close()
                    raise
        except GatewayError as error:
            raise self._scrubber.error(error) from None
        self._response.release()

    def delivered_usage(self) -> Usage:
        return self._relay.delivered_usage()

    def pause_reading(self) -> None:
        self._response.pause_reading()

    def resume_reading(self) -> None:
        self._response.resume_reading()

    def close(self) -> None:
        """Stop reading (the client left, or the gateway is done); the connection is closed
        unless it was released after a complete answer."""
        self._response.close()


async def open_event_stream(
    response: UpstreamResponse, provider: Provider, relay: SSERelay, scrubber: Scrubber
) -> UpstreamEventStream:
    """Read until the first client bytes exist, so a failure so far can still be failed over."""
    first: list[bytes] = []
    failure: GatewayError | None = None
    try:
        with upstream_errors(provider):
            deadline = asyncio.get_running_loop().time() + provider.timeouts.first_byte
            # The connection's timer bounds each read's silence, so the usual first read, which
            # brings the first event, needs no timeout of its own.
            ended = await _read_into(response, relay, first)
            if not first and not ended:
                async with asyncio.timeout_at(deadline):
                    while not first and not ended:
                        ended = await _read_into(response, relay, first)
            if not first:
                raise UpstreamProtocolError(f"provider {provider.name!r} sent an empty stream")
            if not relay.ended and response.exhausted:
                # The whole answer came at once: end it now, so it goes out in one write.
                try:
                    first.append(relay.end())
                except GatewayError as error:
                    failure = scrubber.error(error)
    except GatewayError as error:
        response.close()
        raise scrubber.error(error) from None
    except BaseException:
        response.close()
        raise
    if relay.ended:
        response.release()
    else:
        # After the first event the read timeout becomes the idle gap allowed between reads.
        response.set_read_timeout(provider.timeouts.idle)
    return UpstreamEventStream(response, provider, relay, b"".join(first), scrubber, failure)


async def _read_into(response: UpstreamResponse, relay: SSERelay, first: list[bytes]) -> bool:
    """Translate the next chunk, or the end, into `first`; say whether the stream ended."""
    chunk = await response.read_chunk()
    out = relay.feed(chunk) if chunk else relay.end()
    if out:
        first.append(out)
    return not chunk
