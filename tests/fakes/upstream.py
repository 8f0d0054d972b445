"""A scriptable fake upstream on a loopback port: records requests, replays scripted replies."""

from __future__ import annotations

import asyncio
import ssl
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web


@dataclass
class Reply:
    """One scripted answer: a JSON body, or SSE chunks sent one by one."""

    status: int = 200
    json: Any = None
    body: bytes | None = None
    headers: dict[str, str] = field(default_factory=dict)
    chunks: list[bytes] | None = None
    delay: float = 0.0
    chunk_delay: float = 0.0
    # Close the connection abruptly after this many chunks (a dropped upstream).
    drop_after: int | None = None
    # Wait for this event before sending the chunks after `hold_after` (silence on demand).
    hold: asyncio.Event | None = None
    hold_after: int = 0
    # Called when the request arrives (e.g. to advance a test clock by this upstream's latency).
    on_request: Callable[[], None] | None = None


@dataclass
class Received:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes
    # The client's (gateway's) source port: equal ports mean a reused pooled connection.
    peer_port: int = 0

    @property
    def json(self) -> Any:
        return orjson.loads(self.body)


class FakeUpstream:
    def __init__(self, tls: ssl.SSLContext | None = None) -> None:
        self.tls = tls
        self.replies: deque[Reply] = deque()
        self.default: Reply | None = None
        # When set, answers every request by its content (scripted replies and default unused).
        self.responder: Callable[[Received], Reply] | None = None
        self.received: list[Received] = []
        self.closed_streams = 0
        self.disconnected = asyncio.Event()
        self._runner: web.AppRunner | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}"

    def script(self, *replies: Reply) -> None:
        self.replies.extend(replies)

    async def start(self) -> None:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None, handler_cancellation=True)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0, ssl_context=self.tls)
        await site.start()
        server = site._server
        assert isinstance(server, asyncio.Server)
        self.port = server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        received = Received(
            request.method,
            request.path,
            dict(request.query),
            {k.lower(): v for k, v in request.headers.items()},
            body,
            _peer_port(request),
        )
        self.received.append(received)
        reply = self._reply_for(received)
        if reply is None:
            return web.json_response({"error": "no scripted reply"}, status=599)
        if reply.on_request is not None:
            reply.on_request()
        if reply.delay:
            try:
                await asyncio.sleep(reply.delay)
            except asyncio.CancelledError:
                # The client (the gateway) went away while this upstream was still "thinking".
                self.disconnected.set()
                raise
        if reply.chunks is None:
            raw = reply.body if reply.body is not None else orjson.dumps(reply.json)
            return web.Response(
                status=reply.status,
                body=raw,
                headers={"content-type": "application/json", **reply.headers},
            )
        return await self._stream(request, reply)

    def _reply_for(self, received: Received) -> Reply | None:
        if self.responder is not None:
            return self.responder(received)
        return self.replies.popleft() if self.replies else self.default

    async def _stream(self, request: web.Request, reply: Reply) -> web.StreamResponse:
        response = web.StreamResponse(
            status=reply.status, headers={"content-type": "text/event-stream", **reply.headers}
        )
        await response.prepare(request)
        try:
            for i, chunk in enumerate(reply.chunks or []):
                if reply.drop_after is not None and i >= reply.drop_after:
                    assert request.transport is not None
                    request.transport.close()
                    return response
                if reply.hold is not None and i == reply.hold_after:
                    await reply.hold.wait()
                if reply.chunk_delay:
                    await asyncio.sleep(reply.chunk_delay)
                await response.write(chunk)
            await response.write_eof()
        except (asyncio.CancelledError, ConnectionResetError):
            self.disconnected.set()
            raise
        finally:
            self.closed_streams += 1
        return response


def _peer_port(request: web.Request) -> int:
    peer = request.transport.get_extra_info("peername") if request.transport else None
    return int(peer[1]) if peer else 0
