"""uvicorn's httptools protocol, with two additions for the gateway's hot path.

- Its transport is a `CoalescingTransport`: a response head leaves with its body's start, and
  a busy loop turn's writes leave together at the turn's end.
- A streamed body can be written from any callback, without an ASGI ``send`` per event: the
  scope's ``extensions[BODY_WRITER]["writer"]`` is a ``BodyWriter``. A stream then costs no task
  switch per upstream chunk; the writer reports the client's back-pressure and departure.
- A client is held to the config's ``limits`` (the app's ``ClientPolicy``, found in the lifespan
  state): a request head's size, header count and time, silence within a body, and the number
  of open connections.
"""

from __future__ import annotations

import asyncio
import time
import urllib.parse
import weakref
from typing import Protocol

import httptools
from uvicorn._types import ASGI3Application
from uvicorn.protocols.http.flow_control import service_unavailable
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle

from messagegate.api.envelope import error_body
from messagegate.config import Limits
from messagegate.server.client_limits import CLIENT_POLICY, Phase, Sweep, sweep_for
from messagegate.server.coalescing import CoalescingTransport, turn_flusher
from messagegate.server.head_cycle import HEAD_LINES, HeadCycle

BODY_WRITER = "messagegate.body_writer"


class BodyListener(Protocol):
    """Told what happens to the client while a body is written with a ``BodyWriter``."""

    def pause_reading(self) -> None:
        """The client's socket buffer is full: stop reading what is written until
        `resume_reading`."""
        ...

    def resume_reading(self) -> None: ...

    def lost(self) -> None:
        """The client went away."""
        ...


class BodyWriter:
    """Writes chunks of a chunked response body at once, after ``http.response.start`` (with
    no content-length, so that uvicorn chunks the body); the app ends the body with the usual
    ``http.response.body`` message."""

    __slots__ = ("_cycle", "_protocol", "framed", "last_write")

    def __init__(self, protocol: HttpProtocol, cycle: RequestResponseCycle) -> None:
        # Weak: the request's scope holds this writer, and a strong reference back would make
        # every request a reference cycle, left for the garbage collector to find.
        self._protocol = weakref.ref(protocol)
        self._cycle = weakref.ref(cycle)
        self.last_write = 0.0
        # Chunked framing; an HTTP/1.0 client knows none: the app then calls `begin`.
        self.framed = cycle.scope["http_version"] != "1.0"

    def begin(self) -> None:
        """Called before the response head of an unframed body: an HTTP/1.0 client gets it
        ended by the connection's close, as chunked encoding is HTTP/1.1's. The app then writes
        the whole body here and ends it with an empty ``http.response.body``."""
        cycle = self._cycle()
        if cycle is not None:
            # uvicorn then frames nothing: no transfer-encoding, no length; it closes at the end.
            cycle.chunked_encoding = False
            cycle.keep_alive = False

    def write(self, data: bytes) -> None:
        cycle, protocol = self._cycle(), self._protocol()
        if cycle is None or protocol is None or cycle.disconnected or cycle.response_complete:
            return
        if self.framed:
            data = b"%x\r\n%b\r\n" % (len(data), data)
        protocol.coalescing.write_body(data)
        self.last_write = time.monotonic()

    def listen(self, listener: BodyListener | None) -> None:
        """Tell `listener` (until called with None) of back-pressure and disconnection; a client
        whose socket buffer is full already pauses it at once."""
        protocol = self._protocol()
        if protocol is not None:
            protocol.state.listener = listener
            if listener is not None and protocol.flow.write_paused:
                listener.pause_reading()


_HEAD, _BODY, _ANSWERING = Phase.HEAD, Phase.BODY, Phase.ANSWERING
# uvicorn's own `data_received`, called without building a `super()` per read.
_parse = HttpToolsProtocol.data_received


class HeadRefused(Exception):
    """Raised inside the parser's callback to stop it at a request head over the limits."""


class ConnectionState:
    """What the gateway keeps per client connection, in one slotted object: uvicorn's protocol
    sets 28 attributes, and an instance with more than 30 falls off CPython 3.11's fast
    attribute access (shared keys) for every attribute read, uvicorn's own included."""

    __slots__ = ("deadline", "head_bytes", "limits", "listener", "phase", "refusal", "sweep")

    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self.listener: BodyListener | None = None
        # The connection's phase, and when the sweep closes it (0: never; -1: the sweep starts
        # the phase's clock when it next runs, so that no request pays for reading the time).
        self.phase = _HEAD
        self.deadline = -1.0
        # Bytes of the request head being read, counted while it is incomplete.
        self.head_bytes = 0
        self.refusal: bytes | None = None
        self.sweep: Sweep | None = None


class HttpProtocol(HttpToolsProtocol):
    """The protocol the gateway serves with (``uvicorn.Config(http=HttpProtocol)``)."""

    # The transport uvicorn writes to, as its own type.
    coalescing: CoalescingTransport
    state: ConnectionState

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        loop = asyncio.get_running_loop()
        self.coalescing = CoalescingTransport(transport, turn_flusher(loop))  # type: ignore[arg-type]
        # The app's ClientPolicy; an app that sets none gets the default limits and no cap.
        policy = self.app_state.get(CLIENT_POLICY)
        self.state = state = ConnectionState(policy.limits if policy is not None else Limits())
        super().connection_made(self.coalescing)  # type: ignore[arg-type]
        if policy is not None and not policy.cap.admits(self.connections):
            self.coalescing.abort()
            return
        state.sweep = sweep_for(loop, state.limits)
        state.sweep.watch(self)

    def _enter(self, phase: Phase) -> None:
        """The one place a connection changes phase, and its deadline with it."""
        state = self.state
        state.phase = phase
        if phase is _ANSWERING:
            state.deadline = 0.0
        else:
            state.deadline = -1.0
            if phase is _HEAD:
                state.head_bytes = 0

    def tick(self, now: float) -> None:
        """The sweep's visit: start the phase's clock, or act on its end."""
        state = self.state
        if state.phase is _BODY and not self.cycle.more_body:
            self._enter(_ANSWERING)  # the body is whole: the app has the request
        elif state.deadline < 0:
            limits = state.limits
            timeout = limits.header_timeout if state.phase is _HEAD else limits.body_timeout
            state.deadline = now + timeout
        elif 0 < state.deadline <= now:
            state.deadline = 0.0
            if self._answering():
                state.deadline = -1.0  # a head that follows an answer still being sent waits
            else:
                self._expired()

    def _expired(self) -> None:
        """A head too slow, or a body silent too long."""
        if self.state.phase is _HEAD and self.state.head_bytes:
            self._refuse(408, "the request head took longer than limits.header_timeout")
        else:
            # Nothing asked yet, or a body cut short: the app sees the client leave (499).
            self.coalescing.close()

    def data_received(self, data: bytes) -> None:
        state = self.state
        if state.phase is _BODY and self.cycle.more_body:
            state.deadline = -1.0  # the body's silence ends here
        else:
            if state.phase is not _HEAD:
                # The previous request is whole: these bytes start the next (`_enter(_HEAD)`,
                # inlined: once per request).
                state.phase, state.deadline, state.head_bytes = _HEAD, -1.0, 0
            limit = state.limits.max_header_bytes
            if state.head_bytes + len(data) > limit and not self._head_fits(data):
                self._refuse(431, f"the request head is larger than {limit} bytes")
                return
        _parse(self, data)
        if state.phase is _HEAD and not self.coalescing.is_closing():
            # Still inside a head: what was fed so far counts (the parser buffers it).
            state.head_bytes += len(data)
            if state.head_bytes > state.limits.max_header_bytes:
                limit = state.limits.max_header_bytes
                self._refuse(431, f"the request head is larger than {limit} bytes")

    def _head_fits(self, data: bytes) -> bool:
        """Whether the head this chunk brings (or ends) is within the limit; looked at only when
        the chunk could hold more, so that one read can't bring the parser a huge head."""
        head_bytes = self.state.head_bytes
        end = data.find(b"\r\n\r\n")
        if end >= 0:
            return head_bytes + end + 4 <= self.state.limits.max_header_bytes
        # The head may have ended across the chunks' boundary; if not, the check after parsing
        # stops it.
        return head_bytes > 0 and data[:1] in (b"\r", b"\n")

    def on_headers_complete(self) -> None:
        state = self.state
        if len(self.headers) > state.limits.max_headers:
            message = f"the request has more than {state.limits.max_headers} headers"
            state.refusal = _answer(431, message)
            raise HeadRefused(message)
        self._begin_cycle()
        state.phase, state.deadline = _BODY, -1.0  # `_enter(_BODY)`, without a call per request
        cycle = self.cycle
        # The request's task is created but has not run: its scope can still be completed.
        if cycle is not None and cycle.scope is self.scope:
            self.scope["extensions"] = {
                BODY_WRITER: {"writer": BodyWriter(self, cycle)},
                HEAD_LINES: {},
            }

    def _begin_cycle(self) -> None:
        """uvicorn's `on_headers_complete`, building a `HeadCycle` where it builds its own."""
        parser = self.parser
        http_version = parser.get_http_version()
        self.scope["method"] = parser.get_method().decode("ascii")
        if http_version != "1.1":
            self.scope["http_version"] = http_version
        if parser.should_upgrade() and self._should_upgrade():
            return
        parsed_url = httptools.parse_url(self.url)
        raw_path = parsed_url.path
        path = raw_path.decode("ascii")
        if "%" in path:
            path = urllib.parse.unquote(path)
        self.scope["path"] = self.root_path + path
        self.scope["raw_path"] = self.root_path.encode("ascii") + raw_path
        self.scope["query_string"] = parsed_url.query or b""
        app: ASGI3Application = self.app
        if self.limit_concurrency is not None and (
            len(self.connections) >= self.limit_concurrency
            or len(self.tasks) >= self.limit_concurrency
        ):
            app = service_unavailable
            self.logger.warning("Exceeded concurrency limit.")
        existing_cycle = self.cycle
        self.cycle = HeadCycle(
            scope=self.scope,
            transport=self.transport,
            flow=self.flow,
            logger=self.logger,
            access_logger=self.access_logger,
            access_log=self.access_log,
            default_headers=self.server_state.default_headers,
            message_event=asyncio.Event(),
            expect_100_continue=self.expect_100_continue,
            keep_alive=http_version != "1.0" and parser.should_keep_alive(),
            on_response=self.on_response_complete,
        )
        if existing_cycle is None or existing_cycle.response_complete:
            self._start_asgi_task(self.cycle, app)
        else:
            # Pipelined requests wait their turn.
            self.flow.pause_reading()
            self.pipeline.appendleft((self.cycle, app))

    def send_400_response(self, msg: str) -> None:
        # uvicorn answers any parser error with a 400; a head stopped by `on_headers_complete`
        # gets its own answer instead.
        state = self.state
        refusal, state.refusal = state.refusal, None
        if refusal is None:
            super().send_400_response(msg)
        else:
            self.coalescing.write(refusal)
            self.coalescing.close()

    def _refuse(self, status: int, message: str) -> None:
        # In the middle of an answer (a pipelined head), the connection can only be closed.
        if not self._answering():
            self.coalescing.write(_answer(status, message))
        self.coalescing.close()

    def _answering(self) -> bool:
        """An answer is on its way out: nothing else may be written in its middle."""
        cycle = self.cycle
        return cycle is not None and cycle.response_started and not cycle.response_complete

    def pause_writing(self) -> None:
        super().pause_writing()
        listener = self.state.listener
        if listener is not None:
            listener.pause_reading()

    def resume_writing(self) -> None:
        super().resume_writing()
        listener = self.state.listener
        if listener is not None:
            listener.resume_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        state = self.state
        if state.sweep is not None:
            state.sweep.watched.discard(self)
        listener, state.listener = state.listener, None
        if listener is not None:
            listener.lost()


_REASONS = {408: b"Request Timeout", 431: b"Request Header Fields Too Large"}


def _answer(status: int, message: str) -> bytes:
    """A whole answer to a request the app never saw, in Anthropic's envelope."""
    body = error_body("invalid_request_error", message)
    head = b"HTTP/1.1 %d %s\r\ncontent-type: application/json\r\n" % (status, _REASONS[status])
    return head + b"content-length: %d\r\nconnection: close\r\n\r\n%b" % (len(body), body)
