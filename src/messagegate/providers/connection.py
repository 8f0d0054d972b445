"""One keep-alive HTTP/1.1 connection to an upstream: it sends a request and parses the answer.

The parsing is httptools' (llhttp); this module only keeps the state between its callbacks and
the task reading the answer. A gateway's upstream calls are all alike (one POST, one answer,
often streamed), so a connection costs a few microseconds per request instead of a general
client's layers of request, response and stream objects.

Where a connection is in its life is one ``Phase``; ``UpstreamConnection._enter`` makes every
change of it, and refuses one ``_NEXT`` does not allow. Flow control (the reader's pause, the
socket's) is apart from it: it only matters while a body arrives.
"""

from __future__ import annotations

import asyncio
import zlib
from collections.abc import Callable
from enum import IntEnum
from typing import Protocol, cast

import httptools

# Unread streamed body above this pauses the socket until the reader catches up.
_HIGH_WATER = 256 * 1024
# An answer held whole (not streamed) above this fails: the gateway is no sink for any size.
DEFAULT_MAX_ANSWER = 64 * 1024 * 1024


class TransportError(Exception):
    """The connection failed; `answered` tells whether any of the answer had arrived."""

    def __init__(self, message: str, *, answered: bool = False) -> None:
        super().__init__(message)
        self.answered = answered


class ConnectionDropped(TransportError):
    """The upstream closed the connection before its answer was complete."""


class ProtocolViolation(TransportError):
    """The upstream's bytes are not a valid HTTP/1.1 answer."""


class AnswerTooLarge(ProtocolViolation):
    """The answer, decompressed, is larger than the gateway holds."""


class ReadTimeout(TransportError, TimeoutError):
    """No bytes for longer than the read timeout, or past the request's deadline."""


class Phase(IntEnum):
    """A connection's lifecycle, in order: the two ends, CLOSED and FAILED, compare highest.

    An IntEnum, so that the transition table hashes it at C speed.
    """

    IDLE = 1  # open, no request in flight: new, or its last answer consumed
    SENT = 2  # a request went out; its answer's head has not come (an interim 1xx stays here)
    BODY = 3  # the answer's head came; its body is arriving
    COMPLETE = 4  # the whole answer came and the socket is open
    CLOSED = 5  # the socket is gone or going with nothing missing: idle, or after a whole answer
    FAILED = 6  # the socket is gone or going before the answer was whole; ``error`` says why


# The phases as module names: reading an attribute of an Enum class takes CPython's slow path
# (EnumType has a __getattr__), ~20 times a global's cost, and the hot path reads them.
IDLE, SENT, BODY, COMPLETE, CLOSED, FAILED = Phase

_NEXT: dict[Phase, frozenset[Phase]] = {
    IDLE: frozenset({SENT, CLOSED, FAILED}),
    SENT: frozenset({BODY, FAILED}),
    BODY: frozenset({COMPLETE, FAILED}),
    COMPLETE: frozenset({IDLE, CLOSED}),
    CLOSED: frozenset(),
    FAILED: frozenset(),
}


class IllegalTransition(RuntimeError):
    """A bug of ours: the connection was asked to move where its lifecycle does not go."""


class BodyTranslator(Protocol):
    """Turns an answer's body, as it arrives, into the bytes its reader sends on (see ``pipe``)."""

    def feed(self, chunk: bytes) -> bytes: ...

    def end(self) -> bytes:
        """The answer is complete: the bytes its end completes."""
        ...


class Channel(Protocol):
    """Where a piped body's translation goes, from the socket's callback."""

    def write(self, data: bytes) -> None: ...

    def end(self, last: bytes) -> None:
        """The body is complete; `last` is what its end completed (sent with the answer's end)."""
        ...


class UpstreamConnection(asyncio.Protocol):
    """Protocol and reader state for one connection; one request at a time."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        on_lost: Callable[[UpstreamConnection], None],
        on_wake: Callable[[], None] | None = None,
        max_answer: int = DEFAULT_MAX_ANSWER,
    ) -> None:
        self.loop = loop
        self.max_answer = max_answer
        self.on_lost = on_lost
        # Called right after a callback of ours woke the task awaiting this answer.
        self.on_wake = on_wake
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.state = IDLE
        # Set when, and only when, the state is FAILED: what the reader gets raised.
        self.error: TransportError | None = None
        self.idle_since = 0.0
        self._reset()

    def _reset(self) -> None:
        self.status = 0
        self.raw_headers: list[tuple[bytes, bytes]] = []
        self.keep_alive = False
        self.chunks: list[bytes] = []
        self.buffered = 0
        self.streaming = False
        # The socket's reading is paused (`socket_paused`) while the reader paused it
        # (`reading_paused`) or, in pull mode, while more than _HIGH_WATER bytes wait unread.
        self.reading_paused = False
        self.socket_paused = False
        self.waiter: asyncio.Future[None] | None = None
        # Set by `pipe`: the body goes through the translator to the channel as it arrives, and
        # `piped` ends with it.
        self.translator: BodyTranslator | None = None
        self.channel: Channel | None = None
        self.piped: asyncio.Future[None] | None = None
        self.decompressor: zlib._Decompress | None = None
        # Timeouts: silence allowed between reads, and a deadline for the whole exchange.
        self.read_timeout = 0.0
        self.deadline = 0.0
        self.last_data = 0.0
        self.timer: asyncio.TimerHandle | None = None

    # -- lifecycle ------------------------------------------------------------------------------

    def _enter(self, phase: Phase) -> None:
        """The one place the state changes."""
        if phase not in _NEXT[self.state]:
            raise IllegalTransition(f"{self.state.name} -> {phase.name}")
        self.state = phase

    def _enter_failed(self, error: TransportError) -> None:
        error.answered = self.state is BODY
        self._enter(FAILED)
        self.error = error

    @property
    def complete(self) -> bool:
        """The whole answer has come (the socket may have closed after it)."""
        state = self.state
        return state is COMPLETE or state is CLOSED

    @property
    def closed(self) -> bool:
        state = self.state
        return state is CLOSED or state is FAILED

    # -- sending --------------------------------------------------------------------------------

    def send(self, request: bytes, read_timeout: float, total: float) -> None:
        """Write one whole request; the answer's bytes then arrive through the callbacks."""
        assert self.transport is not None
        self._enter(SENT)
        self._reset()
        now = self.loop.time()
        self.read_timeout = read_timeout
        self.deadline = now + total
        self.last_data = now
        self.timer = self.loop.call_at(min(now + read_timeout, self.deadline), self._check_timeout)
        self.transport.write(request)

    # -- reading --------------------------------------------------------------------------------

    async def wait_headers(self) -> None:
        while self.state is SENT:
            await self._wait()
        error = self.error
        if error is not None and not error.answered:
            raise error

    async def read_chunk(self) -> bytes:
        """The next body bytes as they arrive (no framing), or b"" once the answer is complete."""
        self.streaming = True
        while not self.chunks:
            if self.complete:
                return b""
            await self._wait()
        data = self.chunks[0] if len(self.chunks) == 1 else b"".join(self.chunks)
        self.chunks.clear()
        self.buffered = 0
        if self.socket_paused:
            self._flow()
        return data

    async def read_all(self) -> bytes:
        while not self.complete:
            await self._wait()
        data = b"".join(self.chunks)
        self.chunks.clear()
        return data

    def pipe(self, translator: BodyTranslator, channel: Channel) -> asyncio.Future[None]:
        """Hand the rest of the body to `translator` from the socket's callback, with no task
        switch, and what it gives to `channel`: what is buffered now at once, then what each
        read of the socket brings, in one piece, then the end (``channel.end``).

        The future ends when the channel has seen the end, or fails with the transport's error
        or with what the translator or the channel raised (the connection is then closed).
        """
        self.piped = self.loop.create_future()
        if self.error is not None:
            self.piped.set_exception(self.error)
            return self.piped
        self.translator = translator
        self.channel = channel
        # Each read now goes straight to the translator: nothing waits unread any more.
        self.streaming = False
        self._push()
        if self.socket_paused:
            self._flow()
        return self.piped

    def _push(self) -> None:
        """Translate what the last read brought, and the end once the answer is complete."""
        translator, channel = self.translator, self.channel
        if translator is None or channel is None:
            return
        chunks = self.chunks
        try:
            if chunks:
                data = chunks[0] if len(chunks) == 1 else b"".join(chunks)
                chunks.clear()
                self.buffered = 0
                out = translator.feed(data)
                if out:
                    channel.write(out)
            if self.state is COMPLETE or self.state is CLOSED:
                channel.end(translator.end())
                self._end_pipe(None)
        except BaseException as exc:
            self._pipe_failed(exc)

    def pause_reading(self) -> None:
        """Pause the socket's reading until `resume_reading` (the reader's own reader is slow);
        the idle timeout waits meanwhile."""
        self.reading_paused = True
        self._flow()

    def resume_reading(self) -> None:
        self.reading_paused = False
        self._flow()

    def _flow(self) -> None:
        """Pause or resume reading the socket, as the reader's pause and the unread bytes
        require."""
        pause = self.reading_paused or (self.streaming and self.buffered > _HIGH_WATER)
        if pause == self.socket_paused or self.transport is None or self.state >= CLOSED:
            return
        self.socket_paused = pause
        if pause:
            self.transport.pause_reading()
        else:
            self.last_data = self.loop.time()
            self.transport.resume_reading()

    def set_read_timeout(self, seconds: float) -> None:
        """From now on, allow `seconds` of silence between reads (a stream's idle timeout)."""
        self.read_timeout = seconds
        self.last_data = self.loop.time()
        if self.timer is not None:
            self.timer.cancel()
            self.timer = self.loop.call_at(
                min(self.last_data + seconds, self.deadline), self._check_timeout
            )

    async def _wait(self) -> None:
        if self.error is not None:
            raise self.error
        self.waiter = self.loop.create_future()
        try:
            await self.waiter
        finally:
            self.waiter = None

    def _wake(self) -> None:
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            if self.error is not None:
                waiter.set_exception(self.error)
            else:
                waiter.set_result(None)
            if self.on_wake is not None:
                self.on_wake()
        if self.translator is not None and self.error is not None:
            self._end_pipe(self.error)

    def _end_pipe(self, error: BaseException | None) -> None:
        self.translator = self.channel = None
        piped = self.piped
        if piped is not None and not piped.done():
            if error is None:
                piped.set_result(None)
            else:
                piped.set_exception(error)
            if self.on_wake is not None:
                self.on_wake()

    def _pipe_failed(self, error: BaseException) -> None:
        """The translator or the channel raised: nothing more of this answer is wanted, so the
        connection closes."""
        if self.state is BODY:
            self._enter_failed(TransportError("the gateway stopped reading the answer"))
        elif self.state is COMPLETE:
            self._enter(CLOSED)
        if self.transport is not None:
            self.transport.abort()
        self._end_pipe(error)

    def finished(self) -> None:
        """The answer was consumed: stop the timer and any pause; the pool decides whether to
        keep us."""
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        self.reading_paused = self.streaming = False
        self._flow()
        if self.state is COMPLETE:
            self._enter(IDLE)

    @property
    def reusable(self) -> bool:
        return self.state is IDLE and self.keep_alive

    def abort(self) -> None:
        self.finished()
        self.translator = self.channel = None
        if self.piped is not None and not self.piped.done():
            self.piped.cancel()
        if self.state is IDLE:
            self._enter(CLOSED)
        elif self.state < COMPLETE:
            self._enter_failed(TransportError("the gateway closed the connection"))
        if self.transport is not None:
            self.transport.abort()

    # -- timeouts -------------------------------------------------------------------------------

    def _check_timeout(self) -> None:
        """One timer per request, moved only when it fires: no rescheduling per chunk."""
        self.timer = None
        if self.state is not SENT and self.state is not BODY:
            return
        now = self.loop.time()
        if now >= self.deadline:
            self._fail(ReadTimeout("the answer took longer than the total timeout"))
            self._wake()
            return
        quiet_until = self.last_data + self.read_timeout
        if now >= quiet_until and not self.socket_paused:
            self._fail(ReadTimeout(f"no data for {self.read_timeout:g} s"))
            self._wake()
            return
        if self.socket_paused:
            quiet_until = now + self.read_timeout
        self.timer = self.loop.call_at(min(quiet_until, self.deadline), self._check_timeout)

    def _fail(self, error: TransportError) -> None:
        """Close the socket: the answer failed, or, when it had come whole, what followed it
        was not asked for (the answer stands)."""
        if self.state is COMPLETE:
            self._enter(CLOSED)
        elif self.state < CLOSED:
            self._enter_failed(error)
        if self.transport is not None:
            self.transport.abort()

    # -- asyncio.Protocol -----------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        self.last_data = self.loop.time()
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._fail(ProtocolViolation("the upstream switched protocols"))
        except httptools.HttpParserError as exc:
            # What one of our callbacks raised is the exception's context: its message says
            # what was wrong, where the parser's own only says that a callback failed.
            cause = exc.__context__
            if isinstance(cause, TransportError):
                self._fail(cause)
            else:
                self._fail(ProtocolViolation(f"invalid HTTP answer: {exc}"))
        if self.translator is not None and self.error is None:
            self._push()
        else:
            self._wake()

    def eof_received(self) -> bool:
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if self.state is BODY and exc is None and self._ends_at_close():
            self._enter(COMPLETE)
            self._push()
        if self.state is SENT or self.state is BODY:
            self._enter_failed(ConnectionDropped("the upstream closed the connection"))
        elif self.state is not CLOSED and self.state is not FAILED:
            self._enter(CLOSED)
        self._wake()
        self.on_lost(self)

    def _ends_at_close(self) -> bool:
        """An answer with neither a length nor chunked framing ends when the connection does."""
        names = {name for name, _ in self.raw_headers}
        return b"content-length" not in names and b"transfer-encoding" not in names

    # -- httptools callbacks --------------------------------------------------------------------

    def on_message_begin(self) -> None:
        if self.state is not SENT:
            # Bytes after the answer, or on an idle connection: nothing was asked for.
            raise ProtocolViolation("an answer nobody asked for")

    def on_header(self, name: bytes, value: bytes) -> None:
        self.raw_headers.append((name.lower(), value))

    def on_headers_complete(self) -> None:
        self.status = self.parser.get_status_code()
        if self.status < 200:
            return  # an interim answer (100 Continue, 103 Early Hints): the real one follows
        self.keep_alive = self.parser.should_keep_alive()
        for name, value in self.raw_headers:
            if name == b"content-encoding" and value.strip().lower() in (b"gzip", b"deflate"):
                # Asked for identity; some servers compress anyway. wbits 47: gzip or zlib header.
                self.decompressor = zlib.decompressobj(47)
        self._enter(BODY)

    def on_body(self, body: bytes) -> None:
        if self.decompressor is not None:
            body = self._inflate(body)
        self.chunks.append(body)
        self.buffered += len(body)
        if self.buffered > _HIGH_WATER:
            if self.buffered > self.max_answer:
                # Only an answer read whole gets here: a stream pauses at _HIGH_WATER.
                raise AnswerTooLarge(f"an answer larger than {self.max_answer} bytes")
            if self.streaming and not self.socket_paused:
                self._flow()

    def _inflate(self, body: bytes) -> bytes:
        """Decompress, never past what may still be held: a few KiB of gzip can inflate to
        GiBs (a gzip bomb)."""
        assert self.decompressor is not None
        room = self.max_answer - self.buffered
        try:
            out = self.decompressor.decompress(body, room + 1)
        except zlib.error as exc:
            raise ProtocolViolation(f"invalid compressed body: {exc}") from None
        if len(out) > room:
            raise AnswerTooLarge(f"an answer larger than {self.max_answer} bytes decompressed")
        return out

    def on_message_complete(self) -> None:
        if self.state is SENT:
            self.raw_headers = []  # the end of an interim answer
            return
        if self.decompressor is not None:
            # `_inflate` left nothing unconsumed, so what remains is at most zlib's window.
            tail = self.decompressor.flush()
            self.decompressor = None
            if tail:
                self.on_body(tail)
        self._enter(COMPLETE)
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def headers(self) -> dict[str, str]:
        """Header names in lower case; a repeated header's values joined as HTTP allows."""
        headers: dict[str, str] = {}
        for name, value in self.raw_headers:
            key = name.decode("latin-1")
            text = value.decode("latin-1")
            headers[key] = f"{headers[key]}, {text}" if key in headers else text
        return headers
