"""``messagegate proxy``: the plain Messages API on loopback, without a key, each request sealed
to the gateway and each answer opened (docs/privacy-protocol.md)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from messagegate.api.envelope import error_body, error_payload
from messagegate.api.headers import CLIENT_API_HEADERS
from messagegate.api.sse import encode_event
from messagegate.config import Timeouts
from messagegate.privacy.client import (
    ERROR_HEADER,
    PrivacySession,
    RegisteredSecret,
    SealedExchange,
)
from messagegate.privacy.codec import VERSION, CodecError
from messagegate.privacy.gateway import HEADER
from messagegate.privacy.trust import KeyTrust
from messagegate.providers.connection import TransportError
from messagegate.providers.pool import ConnectionPool, Endpoint, RequestHead, UpstreamResponse

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

log = logging.getLogger("messagegate.proxy")
MAX_BODY_BYTES = 32 * 1024 * 1024
SEALED_PATHS = ("/v1/messages", "/v1/messages/count_tokens")
_FORWARDED = (*CLIENT_API_HEADERS, "content-type")
_NOT_RELAYED = frozenset(
    {"content-length", "transfer-encoding", "connection", "keep-alive", HEADER, "date", "server"}
)
_JSON = (b"content-type", b"application/json")


class ProxyError(Exception):
    """Answered to the local client with the envelope: `status`, `error_type`, message."""

    def __init__(self, status: int, error_type: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.error_type = error_type


class ProxyApp:
    def __init__(
        self,
        gateway_url: str,
        trust: KeyTrust,
        api_key: str | None,
        timeouts: Timeouts | None = None,
        clock: Callable[[], float] = time.monotonic,
        on_wake: Callable[[asyncio.AbstractEventLoop], Callable[[], None]] | None = None,
    ) -> None:
        self.endpoint = Endpoint.parse(gateway_url.rstrip("/") + "/")
        self.head = RequestHead(self.endpoint, {})
        self.prefix = self.endpoint.target.rstrip("/")
        self.trust = trust
        self.auth = {"x-api-key": api_key} if api_key else {}
        self.timeouts = timeouts or Timeouts()
        self.clock = clock
        # The pool's hook run after a gateway read woke a request's task, made for the loop.
        self.on_wake = on_wake
        self.pool: ConnectionPool | None = None
        self.session: PrivacySession | None = None

    async def startup(self) -> None:
        on_wake = self.on_wake
        loop = asyncio.get_running_loop()
        self.pool = ConnectionPool(on_wake=on_wake(loop) if on_wake is not None else None)
        session = PrivacySession(self._call_whole, self.trust, self.clock)
        await session.start()
        self.session = session
        log.info("gateway key %s trusted; secret registered", session.key_id)

    async def shutdown(self) -> None:
        if self.pool is not None:
            self.pool.close()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            await self._http(scope, receive, send)
        elif scope["type"] == "lifespan":
            await self._lifespan(receive, send)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    await self.startup()
                except Exception as exc:
                    # Before any prompt was taken: the proxy does not start.
                    await send({"type": "lifespan.startup.failed", "message": str(exc)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.shutdown()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        path, method = scope["path"], scope["method"]
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        query = scope.get("query_string", b"").decode("latin-1")
        target = self.prefix + path + (f"?{query}" if query else "")
        try:
            if path in ("/", "") and method in ("GET", "HEAD"):
                await _respond(send, 200, [_JSON], b'{"service":"messagegate proxy"}')
            elif path in SEALED_PATHS and method == "POST":
                body = await _read_body(receive)
                await self._sealed(target, _forwarded(headers), body, send)
            elif path.startswith("/v1/") and method == "GET":
                await self._clear(target, _forwarded(headers), send)
            else:
                raise ProxyError(404, "not_found_error", f"no endpoint {method} {path}")
        except ProxyError as error:
            await _respond(send, error.status, [_JSON], error_body(error.error_type, str(error)))

    async def _sealed(self, target: str, headers: dict[str, str], body: bytes, send: Send) -> None:
        session = self._session()
        registered = await self._secret(session.secret())
        exchange, response = await self._send_sealed(target, headers, body, registered)
        if response.status == 400 and response.headers.get(ERROR_HEADER) == "unknown_secret":
            # The gateway forgot the secret (restarted, or it served its last exchange).
            await response.read()
            registered = await self._secret(session.renew(stale=registered))
            exchange, response = await self._send_sealed(target, headers, body, registered)
        await self._answer(exchange, response, send)

    async def _secret(self, pending: Awaitable[RegisteredSecret]) -> RegisteredSecret:
        try:
            return await pending
        except Exception as exc:
            log.warning("privacy: no secret: %s", exc)
            raise ProxyError(502, "api_error", f"privacy mode: no secret: {exc}") from None

    async def _send_sealed(
        self,
        target: str,
        headers: dict[str, str],
        body: bytes,
        registered: RegisteredSecret,
    ) -> tuple[SealedExchange, UpstreamResponse]:
        exchange = SealedExchange(registered)
        headers = headers | {HEADER: exchange.header}
        try:
            sealed = exchange.seal_request(body)
        except ValueError as exc:
            raise ProxyError(
                400, "invalid_request_error", f"body is not a JSON object: {exc}"
            ) from None
        return exchange, await self._call("POST", target, headers, sealed)

    async def _answer(
        self, exchange: SealedExchange, response: UpstreamResponse, send: Send
    ) -> None:
        head = _relayed(response.headers)
        if response.headers.get(HEADER) != VERSION:
            body = await self._read(response)
            if response.status < 400:
                # Only errors come clear: a clear answer to a sealed request is not the gateway's.
                raise ProxyError(502, "api_error", "privacy mode: the answer was not sealed")
            await _respond(send, response.status, head, body)
            return
        if not response.headers.get("content-type", "").startswith("text/event-stream"):
            try:
                body = exchange.open_answer(await self._read(response))
            except CodecError as error:
                raise ProxyError(502, "api_error", f"privacy mode: {error}") from None
            await _respond(send, response.status, head, body)
            return
        await send({"type": "http.response.start", "status": response.status, "headers": head})
        await self._relay_stream(exchange, response, send)

    async def _relay_stream(
        self, exchange: SealedExchange, response: UpstreamResponse, send: Send
    ) -> None:
        opener = exchange.event_opener()
        try:
            while chunk := await response.read_chunk():
                opened = opener.feed(chunk)
                if opened:
                    await send({"type": "http.response.body", "body": opened, "more_body": True})
            opener.finish()
            response.release()
            tail = b""
        except CodecError as error:
            response.close()
            tail = encode_event("error", error_payload("api_error", f"privacy mode: {error}"))
        except (OSError, TransportError, TimeoutError) as exc:
            response.close()
            tail = encode_event("error", error_payload("api_error", f"gateway: {exc}"))
        await send({"type": "http.response.body", "body": tail})

    async def _clear(self, target: str, headers: dict[str, str], send: Send) -> None:
        response = await self._call("GET", target, headers, b"")
        await _respond(
            send, response.status, _relayed(response.headers), await self._read(response)
        )

    async def _call_whole(
        self, method: str, path: str, body: bytes
    ) -> tuple[int, dict[str, str], bytes]:
        headers = {"content-type": "application/json"} if body else {}
        response = await self._call(method, self.prefix + path, headers, body)
        return response.status, response.headers, await self._read(response)

    async def _call(
        self, method: str, target: str, headers: dict[str, str], body: bytes
    ) -> UpstreamResponse:
        assert self.pool is not None
        request = _encode(method, self.endpoint, target, headers | self.auth, body)
        try:
            return await self.pool.post(self.head, request, self.timeouts)
        except (OSError, TransportError, TimeoutError) as exc:
            raise ProxyError(502, "api_error", f"gateway unreachable: {exc}") from None

    async def _read(self, response: UpstreamResponse) -> bytes:
        try:
            return await response.read()
        except (OSError, TransportError, TimeoutError) as exc:
            raise ProxyError(502, "api_error", f"gateway dropped the answer: {exc}") from None

    def _session(self) -> PrivacySession:
        if self.session is None:
            raise ProxyError(503, "api_error", "the proxy is not ready")
        return self.session


def _forwarded(headers: dict[str, str]) -> dict[str, str]:
    return {name: headers[name] for name in _FORWARDED if name in headers}


def _relayed(headers: dict[str, str]) -> list[tuple[bytes, bytes]]:
    return [
        (k.encode("latin-1"), v.encode("latin-1"))
        for k, v in headers.items()
        if k not in _NOT_RELAYED
    ]


def _encode(
    method: str, endpoint: Endpoint, target: str, headers: dict[str, str], body: bytes
) -> bytes:
    lines = [f"{method} {target} HTTP/1.1", f"host: {endpoint.host_header}"]
    lines += [f"{name}: {value}" for name, value in headers.items() if "\n" not in value]
    lines += [f"content-length: {len(body)}", "", ""]
    return "\r\n".join(lines).encode("latin-1") + body


async def _read_body(receive: Receive) -> bytes:
    chunks: list[bytes] = []
    size = 0
    more = True
    while more:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ProxyError(499, "api_error", "the client left")
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise ProxyError(413, "request_too_large", "request body is larger than 32 MiB")
        chunks.append(chunk)
        more = message.get("more_body", False)
    return b"".join(chunks)


async def _respond(
    send: Send, status: int, headers: list[tuple[bytes, bytes]], body: bytes
) -> None:
    headers = [*headers, (b"content-length", b"%d" % len(body))]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
