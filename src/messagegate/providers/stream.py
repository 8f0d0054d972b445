"""Reading an upstream SSE response: the first event awaited, the rest piped as it arrives."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Protocol

from messagegate.api.usage import Usage
from messagegate.config import Provider
from messagegate.errors import GatewayError, UpstreamProtocolError
from messagegate.providers.http import Scrubber, relayed_headers, upstream_errors
from messagegate.providers.pool import UpstreamResponse
from messagegate.translate.sse_decoder import ServerSentEvent, SSEDecoder

Write = Callable[[bytes], None]


class EventConverter(Protocol):
    """Turns upstream SSE events into the client's Anthropic SSE bytes."""

    usage: Usage

    @property
    def usual_event(self) -> Callable[[bytes], bytes | None]:
        """The cheapest test for the usual event (an OpenAI text delta, an Anthropic
        content-block event), tried first on each chunk: the client bytes of one such whole
        event, else None (a chunk of several events included)."""
        ...

    def convert(self, event: ServerSentEvent) -> bytes: ...

    def whole_event(self, event: bytes) -> bytes | None:
        """The client bytes of one whole event (its blank line included) in the usual form, taken
        from its bytes without the decoder; None, with nothing recorded, for anything else (a
        chunk of several events included)."""
        ...

    def whole_run(self, chunk: bytes, start: int) -> tuple[bytes, int]:
        """The client bytes of the usual events that follow one another from `start` in a
        chunk of whole events, taken in one go (a fast upstream's burst), and where they end;
        `start` when none is there."""
        ...

    def finish(self) -> bytes:
        """The upstream ended; raise a GatewayError if it ended too early."""
        ...


class SSERelay:
    """Upstream body bytes in, the client's bytes out: a ``BodySink``.

    What each chunk completes goes to `write`; what the upstream's end completes goes to
    `write_end`, so that it can leave with the end of the client's answer.
    """

    __slots__ = (
        "_between_events",
        "_convert",
        "_decoder",
        "_usual_event",
        "_whole_event",
        "_whole_run",
        "converter",
        "ended",
        "write",
        "write_end",
    )

    def __init__(
        self, converter: EventConverter, write: Write, max_event: int = 16 * 1024 * 1024
    ) -> None:
        self.converter = converter
        self.write = write
        self.write_end = write
        self.ended = False
        self._decoder = SSEDecoder(max_event)
        # The decoder's `between_events`, kept here: only `_decode` can change it.
        self._between_events = True
        self._convert = converter.convert
        self._usual_event = converter.usual_event
        self._whole_event = converter.whole_event
        self._whole_run = converter.whole_run

    def feed(self, chunk: bytes) -> None:
        try:
            # `13 not in` looks for b"\r" with one memchr; `b"\r" not in` first tries the bytes
            # as an int and raises and clears a TypeError: 6x slower, on every chunk.
            if self._between_events and chunk.endswith(b"\n\n") and 13 not in chunk:
                # Whole events, some passed on from their bytes: they must be UTF-8.
                if not chunk.isascii():
                    chunk.decode()
                # The usual chunk is one usual event; a chunk of several is refused.
                out = self._usual_event(chunk)
                if out is None:
                    out = self._whole_events(chunk)
            else:
                out = self._decode(chunk)
        except GatewayError:
            raise
        except Exception as exc:
            raise unusable(exc) from None
        if out:
            self.write(out)

    def _whole_events(self, chunk: bytes) -> bytes:
        """A chunk of whole events: runs of the usual ones and each other one taken from their
        bytes by the converter, and from the first one it refuses on, the rest decoded (the
        decoder is at an event boundary)."""
        outs = []
        start = 0
        while start < len(chunk):
            run, end = self._whole_run(chunk, start)
            if end == start:
                end = chunk.index(b"\n\n", start) + 2
                out = self._whole_event(chunk[start:end])
                if out is None:
                    outs.append(self._decode(chunk[start:]))
                    break
                run = out
            outs.append(run)
            start = end
        return b"".join(outs)

    def _decode(self, chunk: bytes) -> bytes:
        events = self._decoder.feed(chunk)
        self._between_events = self._decoder.between_events
        # Most chunks complete exactly one event: no list and join for those.
        return (
            self._convert(events[0]) if len(events) == 1 else b"".join(map(self._convert, events))
        )

    def end(self) -> None:
        self.ended = True
        try:
            out = b"".join(map(self._convert, self._decoder.finish())) + self.converter.finish()
        except GatewayError:
            raise
        except Exception as exc:
            raise unusable(exc) from None
        if out:
            self.write_end(out)


def unusable(error: Exception) -> UpstreamProtocolError:
    """Whatever a converter choked on (invalid UTF-8, JSON of the wrong shape) is the upstream's
    fault: the documented error, failed over before the first event, an ``error`` event after."""
    if isinstance(error, UnicodeDecodeError):
        return UpstreamProtocolError("the upstream sent an event that is not UTF-8")
    kind = type(error).__name__
    return UpstreamProtocolError(f"the upstream sent an event the gateway cannot read ({kind})")


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
        self.usage = relay.converter.usage
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

    async def pipe(self, write: Write) -> bytes:
        """Write the client bytes of each upstream chunk as it arrives, from the socket's
        callback; return those of the upstream's end, which the caller sends with the end of
        its answer. A failure raises a GatewayError."""
        if self._failure is not None:
            raise self._failure
        tail: list[bytes] = []
        self._relay.write = write
        self._relay.write_end = tail.append
        try:
            with upstream_errors(self._provider):
                try:
                    await self._response.pipe(self._relay)
                except BaseException:
                    self._response.close()
                    raise
        except GatewayError as error:
            raise self._scrubber.error(error) from None
        self._response.release()
        return b"".join(tail)

    def pause(self) -> None:
        self._response.pause_reading()

    def resume(self) -> None:
        self._response.resume_reading()

    def close(self) -> None:
        """Stop reading (the client left, or the gateway is done); the connection is closed
        unless it was released after a complete answer."""
        self._response.close()


async def open_event_stream(
    response: UpstreamResponse, provider: Provider, converter: EventConverter, scrubber: Scrubber
) -> UpstreamEventStream:
    """Read until the first client bytes exist, so a failure so far can still be failed over."""
    first: list[bytes] = []
    relay = SSERelay(converter, first.append, response.max_event)
    failure: GatewayError | None = None
    try:
        with upstream_errors(provider):
            deadline = asyncio.get_running_loop().time() + provider.timeouts.first_byte
            # The connection's timer bounds each read's silence, so the usual first read, which
            # brings the first event, needs no timeout of its own.
            ended = await _read_into(response, relay)
            if not first and not ended:
                async with asyncio.timeout_at(deadline):
                    while not first and not ended:
                        ended = await _read_into(response, relay)
            if not first:
                raise UpstreamProtocolError(f"provider {provider.name!r} sent an empty stream")
            if not relay.ended and response.exhausted:
                # The whole answer came at once: end it now, so it goes out in one write.
                try:
                    relay.end()
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


async def _read_into(response: UpstreamResponse, relay: SSERelay) -> bool:
    """Feed `relay` the next chunk, or its end; say whether the stream ended."""
    chunk = await response.read_chunk()
    if chunk:
        relay.feed(chunk)
        return False
    relay.end()
    return True
