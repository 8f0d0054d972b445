"""uvicorn's httptools protocol, sending each response head in one write with its body's start.

uvicorn writes the status line and headers as soon as the app sends ``http.response.start``,
then the body in a second write: two syscalls and two TCP segments per answer, on a path where
a syscall costs as much as the gateway's whole translation. The app always sends the body's
first part right after the start, so holding the head until then costs nothing.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

_HEAD = b"HTTP/1.1 "


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


class HttpProtocol(HttpToolsProtocol):
    """The protocol the gateway serves with (``uvicorn.Config(http=HttpProtocol)``)."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        loop = asyncio.get_running_loop()
        super().connection_made(HeadHoldingTransport(transport, loop))  # type: ignore[arg-type]
