"""One keep-alive HTTP/1.1 connection to an upstream: it sends a request and parses the answer.

The parsing is httptools' (llhttp); this module only keeps the state between its callbacks and
the task reading the answer. A gateway's upstream calls are all alike (one POST, one answer,
often streamed), so a connection costs a few microseconds per request instead of a general
client's layers of request, response and stream objects.
"""

from __future__ import annotations

import asyncio
import zlib
from collections.abc import Callable
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


class BodySink(Protocol):
    """Takes an answer's body as it arrives, inside the socket's callback (see ``pipe``)."""

    def feed(self, data: bytes) -> None: ...

    def end(self) -> None:
        """The answer is complete."""
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
        self.closed = False
        self.idle_since = 0.0
        self._reset()

    def _reset(self) -> None:
        self.status = 0
        self.raw_headers: list[tuple[bytes, bytes]] = []
        self.headers_done = False
        self.complete = False
        self.keep_alive = False
        self.chunks: list[bytes] = []
        self.buffered = 0
        self.streaming = False
        # Reading the socket is paused while the reader holds it (`pause_reading`) or, in pull
        # mode, while more than _HIGH_WATER bytes wait unread.
        self.held = False
        self.paused = False
        self.error: TransportError | None = None
        self.waiter: asyncio.Future[None] | None = None
        # Set by `pipe`: the body goes to the sink as it arrives, and `piped` ends with it.
        self.sink: BodySink | None = None
        self.piped: asyncio.Future[None] | None = None
        self.decompressor: zlib._Decompress | None = None
        # Timeouts: silence allowed between reads, and a deadline for the whole exchange.
        self.read_timeout = 0.0
        self.deadline = 0.0
        self.last_data = 0.0
        self.timer: asyncio.TimerHandle | None = None

    # -- sending --------------------------------------------------------------------------------

    def send(self, request: bytes, read_timeout: float, total: float) -> None:
        """Write one whole request; the answer's bytes then arrive through the callbacks."""
        assert self.transport is not None
        self._reset()
        now = self.loop.time()
        self.read_timeout = read_timeout
        self.deadline = now + total
        self.last_data = now
        self.timer = self.loop.call_at(min(now + read_timeout, self.deadline), self._check_timeout)
        self.transport.write(request)

    # -- reading --------------------------------------------------------------------------------

    async def wait_headers(self) -> None:
        while not self.headers_done:
            await self._wait()

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
        if self.paused:
            self._flow()
        return data

    async def read_all(self) -> bytes:
        while not self.complete:
            await self._wait()
        data = b"".join(self.chunks)
        self.chunks.clear()
        return data

    def pipe(self, sink: BodySink) -> asyncio.Future[None]:
        """Hand the rest of the body to `sink` from the socket's callback, with no task switch:
        what is buffered now at once, then what each read of the socket brings, in one piece,
        then ``sink.end()``.

        The future ends when the sink has seen the end, or fails with the transport's error or
        with what the sink raised (the connection is then closed).
        """
        self.piped = self.loop.create_future()
        if self.error is not None:
            self.piped.set_exception(self.error)
            return self.piped
        self.sink = sink
        # Each read now goes straight to the sink: nothing waits unread any more.
        self.streaming = False
        self._push()
        if self.paused:
            self._flow()
        return self.piped

    def _push(self) -> None:
        """Give the sink what the last read brought, and the end once the answer is complete."""
        sink = self.sink
        if sink is None:
            return
        chunks = self.chunks
        try:
            if chunks:
                data = chunks[0] if len(chunks) == 1 else b"".join(chunks)
                chunks.clear()
                self.buffered = 0
                sink.feed(data)
            if self.complete:
                sink.end()
                self._end_pipe(None)
        except BaseException as exc:
            self._sink_failed(exc)

    def pause_reading(self) -> None:
        """Hold the socket's reading until `resume_reading` (the reader's own reader is slow);
        the idle timeout waits meanwhile."""
        self.held = True
        self._flow()

    def resume_reading(self) -> None:
        self.held = False
        self._flow()

    def _flow(self) -> None:
        """Pause or resume reading the socket, as the hold and the unread bytes require."""
        pause = self.held or (self.streaming and self.buffered > _HIGH_WATER)
        if pause == self.paused or self.transport is None or self.closed:
            return
        self.paused = pause
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
        if self.sink is not None and self.error is not None:
            self._end_pipe(self.error)

    def _end_pipe(self, error: BaseException | None) -> None:
        self.sink = None
        piped = self.piped
        if piped is not None and not piped.done():
            if error is None:
                piped.set_result(None)
            else:
                piped.set_exception(error)
            if self.on_wake is not None:
                self.on_wake()

    def _sink_failed(self, error: BaseException) -> None:
        """The sink raised: nothing more of this answer is wanted, so the connection closes."""
        self.closed = True
        if self.error is None and not self.complete:
            self.error = TransportError("the gateway stopped reading the answer", answered=True)
        if self.transport is not None:
            self.transport.abort()
        self._end_pipe(error)

    def finished(self) -> None:
        """The answer was consumed: stop the timer and any pause; the pool decides whether to
        keep us."""
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        self.held = self.streaming = False
        self._flow()

    @property
    def reusable(self) -> bool:
        return self.complete and self.keep_alive and not self.closed and self.error is None

    def abort(self) -> None:
        self.finished()
        self.closed = True
        self.sink = None
        if self.piped is not None and not self.piped.done():
            self.piped.cancel()
        if not self.complete and self.error is None:
            self.error = TransportError("the gateway closed the connection")
        if self.transport is not None:
            self.transport.abort()

    # -- timeouts -------------------------------------------------------------------------------

    def _check_timeout(self) -> None:
        """One timer per request, moved only when it fires: no rescheduling per chunk."""
        self.timer = None
        if self.complete or self.closed:
            return
        now = self.loop.time()
        if now >= self.deadline:
            self._fail(ReadTimeout("the answer took longer than the total timeout"))
            return
        quiet_until = self.last_data + self.read_timeout
        if now >= quiet_until and not self.paused:
            self._fail(ReadTimeout(f"no data for {self.read_timeout:g} s"))
            return
        if self.paused:
            quiet_until = now + self.read_timeout
        self.timer = self.loop.call_at(min(quiet_until, self.deadline), self._check_timeout)

    def _fail(self, error: TransportError) -> None:
        error.answered = self.headers_done
        self.error = error
        self.closed = True
        if self.transport is not None:
            self.transport.abort()
        self._wake()

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
            return
        except httptools.HttpParserError as exc:
            # What one of our callbacks raised is the exception's context: its message says
            # what was wrong, where the parser's own only says that a callback failed.
            cause = exc.__context__
            if isinstance(cause, TransportError):
                self._fail(cause)
            else:
                self._fail(ProtocolViolation(f"invalid HTTP answer: {exc}"))
            return
        if self.sink is not None:
            self._push()
        else:
            self._wake()

    def eof_received(self) -> bool:
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if not self.complete and self.error is None:
            if self.headers_done and exc is None and self._ends_at_close():
                self.complete = True
                self._push()
            else:
                self.error = ConnectionDropped(
                    "the upstream closed the connection", answered=self.headers_done
                )
        self._wake()
        self.on_lost(self)

    def _ends_at_close(self) -> bool:
        """An answer with neither a length nor chunked framing ends when the connection does."""
        names = {name for name, _ in self.raw_headers}
        return b"content-length" not in names and b"transfer-encoding" not in names

    # -- httptools callbacks --------------------------------------------------------------------

    def on_message_begin(self) -> None:
        if self.complete:
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
        self.headers_done = True

    def on_body(self, body: bytes) -> None:
        if self.decompressor is not None:
            body = self._inflate(body)
        self.chunks.append(body)
        self.buffered += len(body)
        if self.buffered > _HIGH_WATER:
            if self.buffered > self.max_answer:
                # Only an answer read whole gets here: a stream pauses at _HIGH_WATER.
                raise AnswerTooLarge(f"an answer larger than {self.max_answer} bytes")
            if self.streaming and not self.paused:
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
        if not self.headers_done:
            self.raw_headers = []  # the end of an interim answer
            return
        if self.decompressor is not None:
            # `_inflate` left nothing unconsumed, so what remains is at most zlib's window.
            tail = self.decompressor.flush()
            self.decompressor = None
            if tail:
                self.on_body(tail)
        self.complete = True
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
