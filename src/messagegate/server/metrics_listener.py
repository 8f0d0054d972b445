"""``metrics.listen``: GET /metrics on a port of its own, one request per connection.

Prometheus asks once every few seconds, so this is a plain asyncio server beside the API's,
not a second uvicorn: it reads one bounded request head, answers and closes. Every worker of
``serve --workers N`` binds the port (SO_REUSEPORT); whichever answers reports all of them.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping

from messagegate.api.envelope import error_body
from messagegate.errors import GatewayError, NotFound

# A scrape's request head is a few hundred bytes; a peer gets this long and this much for it.
HEAD_LIMIT = 16 * 1024
HEAD_TIMEOUT = 10.0
_REASONS = {200: b"OK", 401: b"Unauthorized", 404: b"Not Found"}

Check = Callable[[Mapping[str, str]], object]
# Told of each request refused for its key (the API server's own accounting never sees them).
Denied = Callable[[str, GatewayError], None]


class MetricsListener:
    def __init__(
        self,
        render: Callable[[], Awaitable[bytes]],
        content_type: str,
        check: Check,
        denied: Denied,
    ) -> None:
        self.render = render
        self.content_type = content_type.encode()
        self.check = check
        self.denied = denied
        self.server: asyncio.Server | None = None

    async def start(self, host: str, port: int) -> None:
        self.server = await asyncio.start_server(
            self._serve, host, port, limit=HEAD_LIMIT, reuse_port=True
        )

    def close(self) -> None:
        if self.server is not None:
            self.server.close()
            self.server = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            async with asyncio.timeout(HEAD_TIMEOUT):
                head = await reader.readuntil(b"\r\n\r\n")
            writer.write(await self.answer(head))
            await writer.drain()
        except (
            TimeoutError,
            ConnectionError,
            asyncio.IncompleteReadError,
            asyncio.LimitOverrunError,
        ):
            pass
        finally:
            writer.close()

    async def answer(self, head: bytes) -> bytes:
        """The whole HTTP response to one request head."""
        request_line, *lines = head.decode("latin-1").split("\r\n")
        method, _, rest = request_line.partition(" ")
        target = rest.partition(" ")[0]
        headers = {}
        for line in lines:
            name, sep, value = line.partition(":")
            if sep:
                headers[name.strip().lower()] = value.strip()
        try:
            if method != "GET" or target.partition("?")[0] != "/metrics":
                raise NotFound(f"no endpoint {method} {target.partition('?')[0]}")
            try:
                self.check(headers)
            except GatewayError as error:
                if error.denial:
                    self.denied("/metrics", error)
                raise
            return _response(200, self.content_type, await self.render())
        except GatewayError as error:
            return _response(
                error.status, b"application/json", error_body(error.error_type, error.message)
            )


def _response(status: int, content_type: bytes, body: bytes) -> bytes:
    return b"".join(
        (
            b"HTTP/1.1 %d %s\r\n" % (status, _REASONS.get(status, b"Error")),
            b"content-type: " + content_type + b"\r\n",
            b"content-length: %d\r\n" % len(body),
            b"connection: close\r\n\r\n",
            body,
        )
    )
