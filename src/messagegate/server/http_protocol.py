"""uvicorn's httptools protocol, with two additions for the gateway's hot path.

- Its transport is a `CoalescingTransport`: a response head leaves with its body's start, and
  a busy loop turn's writes leave together at the turn's end.
- A streamed body can be written from any callback, without an ASGI ``send`` per event: the
  scope's ``extensions[BODY_WRITER]["writer"]`` is a ``BodyWriter``. A stream then costs no task
  switch per upstream chunk; the writer reports the client's back-pressure and departure.
"""

from __future__ import annotations

import asyncio
import time
import weakref
from typing import Protocol

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle

from messagegate.server.coalescing import CoalescingTransport, turn_flusher

BODY_WRITER = "messagegate.body_writer"


class BodyListener(Protocol):
    """Told what happens to the client while a body is written with a ``BodyWriter``."""

    def pause(self) -> None:
        """The client's socket buffer is full: stop producing until `resume`."""
        ...

    def resume(self) -> None: ...

    def lost(self) -> None:
        """The client went away."""
        ...


class BodyWriter:
    """Writes chunks of a chunked response body at once, after ``http.response.start`` (with
    no content-length, so that uvicorn chunks the body); the app ends the body with the usual
    ``http.response.body`` message."""

    __slots__ = ("_cycle", "_protocol", "last_write")

    def __init__(self, protocol: HttpProtocol, cycle: RequestResponseCycle) -> None:
        # Weak: the request's scope holds this writer, and a strong reference back would make
        # every request a reference cycle, left for the garbage collector to find.
        self._protocol = weakref.ref(protocol)
        self._cycle = weakref.ref(cycle)
        self.last_write = 0.0

    def write(self, data: bytes) -> None:
        cycle, protocol = self._cycle(), self._protocol()
        if cycle is None or protocol is None or cycle.disconnected or cycle.response_complete:
            return
        protocol.coalescing.write_body(b"%x\r\n%b\r\n" % (len(data), data))
        self.last_write = time.monotonic()

    @property
    def paused(self) -> bool:
        protocol = self._protocol()
        return protocol is not None and protocol.flow.write_paused

    def listen(self, listener: BodyListener | None) -> None:
        """Tell `listener` (until called with None) of back-pressure and disconnection."""
        protocol = self._protocol()
        if protocol is not None:
            protocol.body_listener = listener


class HttpProtocol(HttpToolsProtocol):
    """The protocol the gateway serves with (``uvicorn.Config(http=HttpProtocol)``)."""

    body_listener: BodyListener | None = None
    # The transport uvicorn writes to, as its own type.
    coalescing: CoalescingTransport

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        turn = turn_flusher(asyncio.get_running_loop())
        self.coalescing = CoalescingTransport(transport, turn)  # type: ignore[arg-type]
        super().connection_made(self.coalescing)  # type: ignore[arg-type]

    def on_headers_complete(self) -> None:
        super().on_headers_complete()
        cycle = self.cycle
        # The request's task is created but has not run: its scope can still be completed.
        if cycle is not None and cycle.scope is self.scope:
            self.scope["extensions"] = {BODY_WRITER: {"writer": BodyWriter(self, cycle)}}

    def pause_writing(self) -> None:
        super().pause_writing()
        if self.body_listener is not None:
            self.body_listener.pause()

    def resume_writing(self) -> None:
        super().resume_writing()
        if self.body_listener is not None:
            self.body_listener.resume()

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        listener, self.body_listener = self.body_listener, None
        if listener is not None:
            listener.lost()
