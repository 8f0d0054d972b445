"""A loopback HTTP/1.1 server that answers with raw bytes, for framings a web framework won't send:
chunked or close-delimited bodies, gzip, a connection closed instead of an answer."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Callable
from dataclasses import dataclass, field

import httptools


@dataclass
class Answer:
    """What to write for one request, and whether to close the connection after it."""

    data: bytes = b""
    close: bool = False
    # Written this many seconds after `data` (a slow or stalled body).
    later: list[tuple[float, bytes]] = field(default_factory=list)


def response(
    body: bytes = b"{}", status: int = 200, headers: dict[str, str] | None = None
) -> bytes:
    head = f"HTTP/1.1 {status} X\r\ncontent-length: {len(body)}\r\n"
    head += "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
    return head.encode() + b"\r\n" + body


def chunked(*parts: bytes, headers: dict[str, str] | None = None) -> bytes:
    head = "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n"
    head += "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
    body = b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in parts) + b"0\r\n\r\n"
    return head.encode() + b"\r\n" + body


@dataclass
class Seen:
    connection: int
    headers: dict[str, str]
    body: bytes


# (connection number from 0, request number on that connection from 0, request) -> answer
Script = Callable[[int, int, Seen], Answer]


class _Handler(asyncio.Protocol):
    def __init__(self, server: RawHTTPServer, number: int) -> None:
        self.server = server
        self.number = number
        self.count = 0
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self.headers: dict[str, str] = {}
        self.body = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A stream socket's transport, which the protocol API types as its base class.
        self.transport = transport  # type: ignore[assignment]
        self.server.transports.append(transport)

    def connection_lost(self, exc: Exception | None) -> None:
        self.server.lost.append(self.number)
        self.server.changed.set()

    def data_received(self, data: bytes) -> None:
        self.parser.feed_data(data)

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers[name.decode().lower()] = value.decode()

    def on_body(self, body: bytes) -> None:
        self.body += body

    def on_message_complete(self) -> None:
        seen = Seen(self.number, self.headers, self.body)
        self.server.seen.append(seen)
        self.server.changed.set()
        answer = self.server.script(self.number, self.count, seen)
        self.count += 1
        self.headers, self.body = {}, b""
        asyncio.get_running_loop().create_task(self._answer(answer))

    async def _answer(self, answer: Answer) -> None:
        assert self.transport is not None
        self.transport.write(answer.data)
        for delay, data in answer.later:
            await asyncio.sleep(delay)
            if self.transport.is_closing():
                return
            self.transport.write(data)
        if answer.close:
            self.transport.close()


class RawHTTPServer:
    def __init__(self, script: Script, tls: ssl.SSLContext | None = None) -> None:
        self.script = script
        self.tls = tls
        self.seen: list[Seen] = []
        self.connections = 0
        # Numbers of the connections the client closed (or the server, at the end).
        self.lost: list[int] = []
        self.transports: list[asyncio.BaseTransport] = []
        # Set when a request arrives or a connection is lost, so tests wait for it, not poll.
        self.changed = asyncio.Event()
        self._server: asyncio.Server | None = None
        self.port = 0

    async def until(self, condition: Callable[[], bool], seconds: float = 5.0) -> None:
        """Wait until `condition` holds, checking it each time a request or a loss is recorded."""
        async with asyncio.timeout(seconds):
            while not condition():
                self.changed.clear()
                await self.changed.wait()

    def _handler(self) -> _Handler:
        self.connections += 1
        return _Handler(self, self.connections - 1)

    async def __aenter__(self) -> RawHTTPServer:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(self._handler, "127.0.0.1", 0, ssl=self.tls)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *_: object) -> None:
        assert self._server is not None
        self._server.close()
        for transport in self.transports:
            # Stream sockets' transports, all of which can abort.
            transport.abort()  # type: ignore[attr-defined]
        await self._server.wait_closed()
