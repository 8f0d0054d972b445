"""uvicorn's httptools protocol, with two additions for the gateway's hot path.

- Each response head leaves in one write with its body's start. uvicorn writes the status line
  and headers as soon as the app sends ``http.response.start``, then the body in a second write:
  two syscalls and two TCP segments per answer, on a path where a syscall costs as much as the
  gateway's whole translation. The app always sends the body's first part right after the start,
  so holding the head until then costs nothing.
- A streamed body can be written from any callback, without an ASGI ``send`` per event: the
  scope's ``extensions[BODY_WRITER]["writer"]`` is a ``BodyWriter``. A stream then costs no task
  switch per upstream chunk; the writer reports the client's back-pressure and departure.
"""

from __future__ import annotations

import asyncio
import time
import weakref
from typing import Any, Protocol

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle

_HEAD = b"HTTP/1.1 "
BODY_WRITER = "messagegate.body_writer"


class HeadHoldingTransport:
    """Forwards to a transport, holding a response head until the next write or loop turn."""

    __slots__ = ("_held", "_loop", "_transport")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._held: bytes | None = None

    def write(self, data: bytes) -> None:
        held = self._held
        if held is not None:
            self._held = None
            self._transport.write(held + data)
        elif data[:9] == _HEAD:
            # Only the order of bytes matters for correctness: a body that happens to start
            # like a head is merely held until the end of this loop turn.
            self._held = data
            self._loop.call_soon(self._flush)
        else:
            self._transport.write(data)

    def _flush(self) -> None:
        held = self._held
        if held is not None:
            self._held = None
            self._transport.write(held)

    def close(self) -> None:
        self._flush()
        self._transport.close()

    def abort(self) -> None:
        self._held = None
        self._transport.abort()

    def get_write_buffer_size(self) -> int:
        return self._transport.get_write_buffer_size() + len(self._held or b"")

    def __getattr__(self, name: str) -> Any:
        # is_closing, get_extra_info, pause_reading, resume_reading, set_protocol, ...
        return getattr(self._transport, name)


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
        protocol.transport.write(b"%x\r\n%b\r\n" % (len(data), data))
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

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        loop = asyncio.get_running_loop()
        super().connection_made(HeadHoldingTransport(transport, loop))  # type: ignore[arg-type]

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
