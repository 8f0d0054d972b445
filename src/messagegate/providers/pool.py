"""Keep-alive connections to upstreams, pooled per origin, and the answers read through them."""

from __future__ import annotations

import asyncio
import ssl
from collections import deque
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from messagegate.config import Timeouts
from messagegate.providers.connection import (
    DEFAULT_MAX_ANSWER,
    BodyTranslator,
    Channel,
    ConnectionDropped,
    UpstreamConnection,
)
from messagegate.providers.dialer import Dialer, Resolver
from messagegate.providers.slots import ConnectionSlots

# Idle connections older than this are closed rather than reused: servers drop idle connections
# on their own schedule, and a request sent into one that is closing would fail.
KEEPALIVE_SECONDS = 30.0
_DEFAULT_PORTS = {"http": 80, "https": 443}

Origin = tuple[str, str, int]
# Connections are reused only by requests that would have opened them the same way.
PoolKey = tuple[Dialer | None, Origin]


@dataclass(frozen=True, slots=True)
class Endpoint:
    """One upstream URL, split into what the connection needs and what the request line says."""

    scheme: str
    host: str
    port: int
    target: str

    @classmethod
    def parse(cls, url: str) -> Endpoint:
        parts = urlsplit(url)
        if parts.scheme not in _DEFAULT_PORTS or not parts.hostname:
            raise ValueError(f"not an http(s) URL: {url!r}")
        port = parts.port or _DEFAULT_PORTS[parts.scheme]
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        return cls(parts.scheme, parts.hostname, port, target)

    @property
    def origin(self) -> Origin:
        return (self.scheme, self.host, self.port)

    @property
    def url(self) -> str:
        return f"{self.scheme}://{self.host_header}{self.target}"

    @property
    def host_header(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return host if self.port == _DEFAULT_PORTS[self.scheme] else f"{host}:{self.port}"

    def with_query(self, query: str) -> Endpoint:
        separator = "&" if "?" in self.target else "?"
        return Endpoint(self.scheme, self.host, self.port, f"{self.target}{separator}{query}")


class RequestHead:
    """The bytes of a POST to one endpoint that never change: request line and fixed headers.

    `dialer` opens its connections (None: the pool's direct one); through a forwarding proxy the
    request line names the whole URL and carries the proxy's credentials.
    """

    __slots__ = ("dialer", "endpoint", "key", "prefix")

    def __init__(
        self, endpoint: Endpoint, headers: Mapping[str, str], dialer: Dialer | None = None
    ) -> None:
        self.endpoint = endpoint
        self.dialer = dialer
        self.key: PoolKey = (dialer, endpoint.origin)
        fixed = {"host": endpoint.host_header, "accept-encoding": "identity", **headers}
        target = endpoint.target
        if dialer is not None and dialer.forwards(endpoint.scheme):
            target = endpoint.url
            assert dialer.proxy is not None
            if dialer.proxy.authorization is not None:
                fixed["proxy-authorization"] = dialer.proxy.authorization
        self.prefix = f"POST {target} HTTP/1.1\r\n".encode() + _header_lines(fixed)

    def encode(
        self, body: bytes, headers: Mapping[str, str] | None = None, lines: bytes = b""
    ) -> bytes:
        """The request: `headers` to check and encode, `lines` already encoded (`trace_lines`)."""
        extra = _header_lines(headers) + lines if headers else lines
        length = b"content-length: %d\r\n\r\n" % len(body)
        return b"".join((self.prefix, extra, length, body))


def trace_lines(headers: Mapping[str, str]) -> bytes:
    """The W3C trace headers tracing put in a call's headers, as header lines (b"" for none),
    checked as `_header_lines` checks."""
    parent = headers.get("traceparent")
    if parent is None:
        return b""
    state = headers.get("tracestate")
    if state is None:
        text = f"traceparent: {parent}\r\n"
        broken = "\n" in parent or "\r" in parent
    else:
        text = f"traceparent: {parent}\r\ntracestate: {state}\r\n"
        broken = text.count("\n") != 2 or text.count("\r") != 2
    if broken:
        raise ValueError("a header name or value contains a line break")
    return text.encode("latin-1")


def _header_lines(headers: Mapping[str, str]) -> bytes:
    lines = [f"{name}: {value}" for name, value in headers.items()]
    for line in lines:
        if "\r" in line or "\n" in line:
            raise ValueError("a header name or value contains a line break")
    lines.append("")
    return "\r\n".join(lines).encode("latin-1")


class UpstreamResponse:
    """An answer whose status and headers have arrived; its body is read once, whole or in parts."""

    __slots__ = ("_connection", "_pool", "_slots", "headers", "max_event", "status")

    def __init__(
        self,
        pool: ConnectionPool,
        connection: UpstreamConnection,
        slots: ConnectionSlots | None = None,
    ) -> None:
        self._pool = pool
        self._connection: UpstreamConnection | None = connection
        # The provider's slot this answer holds until it is released or closed.
        self._slots = slots
        self.status = connection.status
        self.headers = connection.headers()
        self.max_event = pool.max_event

    async def read(self) -> bytes:
        """The whole body; the connection then goes back to the pool."""
        connection = self._live()
        try:
            data = await connection.read_all()
        except BaseException:
            self.close()
            raise
        self.release()
        return data

    def read_chunk(self) -> Coroutine[Any, Any, bytes]:
        """Body bytes as they arrive; b"" at the end (then call release). The connection's own
        coroutine, not a wrapper around it: a stream calls this once per upstream chunk."""
        return self._live().read_chunk()

    @property
    def exhausted(self) -> bool:
        """The whole body has arrived and been read."""
        connection = self._live()
        return connection.complete and not connection.chunks

    def pipe(self, translator: BodyTranslator, channel: Channel) -> asyncio.Future[None]:
        """The rest of the body through `translator` to `channel` as it arrives
        (``UpstreamConnection.pipe``)."""
        return self._live().pipe(translator, channel)

    def pause_reading(self) -> None:
        if self._connection is not None:
            self._connection.pause_reading()

    def resume_reading(self) -> None:
        if self._connection is not None:
            self._connection.resume_reading()

    def set_read_timeout(self, seconds: float) -> None:
        if self._connection is not None:
            self._connection.set_read_timeout(seconds)

    def release(self) -> None:
        """Done reading: a complete keep-alive answer returns its connection to the pool."""
        connection, self._connection = self._connection, None
        if connection is not None:
            self._pool.release(connection)
            if self._slots is not None:
                self._free_slot()

    def close(self) -> None:
        """Done before the end (or after a failure): the connection cannot be reused."""
        connection, self._connection = self._connection, None
        if connection is not None:
            connection.abort()
            if self._slots is not None:
                self._free_slot()

    def _free_slot(self) -> None:
        slots, self._slots = self._slots, None
        if slots is not None:
            slots.release()

    def _live(self) -> UpstreamConnection:
        if self._connection is None:
            raise RuntimeError("the response was already released")
        return self._connection


class ConnectionPool:
    """Idle connections per origin, most recently used first; new ones opened on demand.

    `on_wake` runs right after a connection's socket callback woke the task awaiting its answer
    (the server uses it to write what that task's step writes in the same loop turn).
    `clock` tells the keep-alive's time; by default the connection's loop's (tests pass a fake).
    """

    def __init__(
        self,
        *,
        keepalive: float = KEEPALIVE_SECONDS,
        ssl_context: ssl.SSLContext | None = None,
        on_wake: Callable[[], None] | None = None,
        max_answer: int = DEFAULT_MAX_ANSWER,
        max_event: int = DEFAULT_MAX_ANSWER,
        clock: Callable[[], float] | None = None,
    ) -> None:
        self.keepalive = keepalive
        self._clock = clock
        self.resolver = Resolver()
        self._direct = Dialer(self.resolver, tls=ssl_context)
        # Bytes of an answer held whole, and of one event of a stream (``open_event_stream``).
        self.max_answer = max_answer
        self.max_event = max_event
        self._on_wake = on_wake
        self._idle: dict[PoolKey, deque[UpstreamConnection]] = {}
        self._origins: dict[UpstreamConnection, PoolKey] = {}

    async def post(
        self,
        head: RequestHead,
        request: bytes,
        timeouts: Timeouts,
        while_waiting: Callable[[], None] | None = None,
        slots: ConnectionSlots | None = None,
    ) -> UpstreamResponse:
        """Send `request` (encoded by `head`) and wait for the answer's status and headers.

        `while_waiting` runs once, as soon as the request has gone out: work the caller needs
        only once the answer comes is done during the upstream's round trip, not after it.
        With `slots` (the provider's connection limit), one is held until the answer is done.
        """
        if slots is not None:
            await slots.acquire()
        try:
            response = None
            connection = self._take_idle(head.key)
            if connection is not None:
                try:
                    response = await self._exchange(connection, request, timeouts, while_waiting)
                except ConnectionDropped as dropped:
                    # The server closed this idle connection as the request went out: nothing
                    # of the request was answered, so it is sent once more on a fresh one.
                    if dropped.answered:
                        raise
                    while_waiting = None
            if response is None:
                connection = await self._open(head, timeouts.connect)
                response = await self._exchange(connection, request, timeouts, while_waiting)
        except BaseException:
            if slots is not None:
                slots.release()
            raise
        response._slots = slots
        return response

    async def _exchange(
        self,
        connection: UpstreamConnection,
        request: bytes,
        timeouts: Timeouts,
        while_waiting: Callable[[], None] | None,
    ) -> UpstreamResponse:
        connection.send(request, timeouts.first_byte, timeouts.total)
        try:
            if while_waiting is not None:
                while_waiting()
            await connection.wait_headers()
        except BaseException:
            connection.abort()
            raise
        return UpstreamResponse(self, connection)

    def _take_idle(self, key: PoolKey) -> UpstreamConnection | None:
        idle = self._idle.get(key)
        while idle:
            connection = idle.pop()
            if connection.closed:
                continue
            now = connection.loop.time() if self._clock is None else self._clock()
            if now - connection.idle_since > self.keepalive:
                # The newest idle connection is too old, so every older one is too.
                for stale in (connection, *idle):
                    stale.abort()
                idle.clear()
                return None
            return connection
        return None

    async def _open(self, head: RequestHead, connect_seconds: float) -> UpstreamConnection:
        loop = asyncio.get_running_loop()
        endpoint = head.endpoint
        dialer = head.dialer or self._direct
        async with asyncio.timeout(connect_seconds):
            _, connection = await dialer.connect(
                lambda: UpstreamConnection(loop, self._lost, self._on_wake, self.max_answer),
                endpoint.scheme,
                endpoint.host,
                endpoint.port,
            )
        self._origins[connection] = head.key
        return connection

    def release(self, connection: UpstreamConnection) -> None:
        connection.finished()
        key = self._origins.get(connection)
        if key is None or not connection.reusable:
            connection.abort()
            return
        clock = self._clock
        now = connection.idle_since = connection.loop.time() if clock is None else clock()
        idle = self._idle.setdefault(key, deque())
        # The oldest idle connections are at the left: close those past the keep-alive, so a
        # burst's connections do not stay open for ever behind a smaller steady load.
        while idle and now - idle[0].idle_since > self.keepalive:
            idle.popleft().abort()
        idle.append(connection)

    def _lost(self, connection: UpstreamConnection) -> None:
        key = self._origins.pop(connection, None)
        idle = self._idle.get(key) if key is not None else None
        if idle and connection in idle:
            idle.remove(connection)

    def paused_count(self) -> int:
        """Connections whose reading is paused because their reader (a client) fell behind."""
        return sum(1 for connection in self._origins if connection.socket_paused)

    def idle_count(self) -> int:
        return sum(len(idle) for idle in self._idle.values())

    def close(self) -> None:
        """Close every connection, idle or in use (at shutdown)."""
        for connection in list(self._origins):
            connection.abort()
        self._idle.clear()
