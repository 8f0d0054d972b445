"""An upstream's SSE body bytes in, the client's Anthropic SSE bytes out: the one shape of the
stream path (``feed(chunk) -> bytes``, ``end() -> bytes``), over either dialect's converter."""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from messagegate.api.usage import Usage
from messagegate.errors import GatewayError, UpstreamProtocolError
from messagegate.translate.delivered import delivered_output_tokens
from messagegate.translate.sse_decoder import ServerSentEvent, SSEDecoder

DEFAULT_MAX_EVENT = 16 * 1024 * 1024
# Client bytes kept for billing a stream the client cuts; past this they are counted and let go,
# so that an endless stream holds a bounded amount (most answers never get there).
MAX_KEPT = 8 * 1024 * 1024


class EventConverter(Protocol):
    """One dialect's events -> the client's Anthropic SSE bytes; the relay's private hooks."""

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
    """Translates one upstream event stream; `usage` is what the upstream reported so far.

    The usual chunks take byte-level fast paths (DEVELOPERS.md, "Rules we keep"): one usual
    event, then runs of usual events and single events taken from their bytes; anything else,
    and everything after it in the chunk, goes through the SSE decoder.
    """

    __slots__ = (
        "_between_events",
        "_convert",
        "_converter",
        "_decoder",
        "_kept",
        "_kept_size",
        "_kept_tokens",
        "_usual_event",
        "_whole_event",
        "_whole_run",
        "encoding",
        "ended",
    )

    def __init__(
        self,
        converter: EventConverter,
        max_event: int = DEFAULT_MAX_EVENT,
        encoding: str = "o200k_base",
    ) -> None:
        self._converter = converter
        # The route's token encoding: what a cut stream's delivered output is counted in.
        self.encoding = encoding
        self.ended = False
        self._decoder = SSEDecoder(max_event)
        # The decoder's `between_events`, kept here: only `_decode` can change it.
        self._between_events = True
        self._convert = converter.convert
        self._usual_event = converter.usual_event
        self._whole_event = converter.whole_event
        self._whole_run = converter.whole_run
        # The client bytes returned so far: counted only if the client cuts the stream.
        self._kept: list[bytes] = []
        self._kept_size = 0
        self._kept_tokens = 0

    @property
    def usage(self) -> Usage:
        return self._converter.usage

    def feed(self, chunk: bytes) -> bytes:
        """The client bytes the events `chunk` completes."""
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
            self._kept.append(out)
            self._kept_size += len(out)
            if self._kept_size > MAX_KEPT:
                self._count_kept()
        return out

    def end(self) -> bytes:
        """The client bytes the upstream's end completes; a GatewayError when it ended too
        early."""
        self.ended = True
        try:
            return b"".join(map(self._convert, self._decoder.finish())) + self._converter.finish()
        except GatewayError:
            raise
        except Exception as exc:
            raise unusable(exc) from None

    def delivered_usage(self) -> Usage:
        """The usage of what was returned so far, for a stream the client cut: the output the
        returned content holds, counted locally, never less than the upstream reported."""
        self._count_kept()
        usage = self._converter.usage
        delivered = Usage(
            input_tokens=usage.input_tokens,
            output_tokens=usage.output_tokens,
            cache_read_input_tokens=usage.cache_read_input_tokens,
            cache_creation_input_tokens=usage.cache_creation_input_tokens,
            cache_creation_1h_input_tokens=usage.cache_creation_1h_input_tokens,
            estimated=usage.estimated,
        )
        if self._kept_tokens > usage.output_tokens:
            delivered.output_tokens = self._kept_tokens
            delivered.estimated = True
        return delivered

    def _count_kept(self) -> None:
        kept, self._kept = self._kept, []
        self._kept_size = 0
        self._kept_tokens += delivered_output_tokens(b"".join(kept), self.encoding)

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


def unusable(error: Exception) -> UpstreamProtocolError:
    """Whatever a converter choked on (invalid UTF-8, JSON of the wrong shape) is the upstream's
    fault: the documented error, failed over before the first event, an ``error`` event after."""
    if isinstance(error, UnicodeDecodeError):
        return UpstreamProtocolError("the upstream sent an event that is not UTF-8")
    kind = type(error).__name__
    return UpstreamProtocolError(f"the upstream sent an event the gateway cannot read ({kind})")
