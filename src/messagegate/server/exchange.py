"""One HTTP exchange over raw ASGI: reading the body, sending JSON and error answers."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable, Coroutine, MutableMapping
from typing import Any, TypeVar
from urllib.parse import parse_qs

import orjson

from messagegate.api.envelope import error_body
from messagegate.api.headers import REQUEST_ID
from messagegate.errors import GatewayError, RequestTooLarge
from messagegate.limits.limiter import header_pairs
from messagegate.privacy.gateway import PrivateExchange
from messagegate.server.client_limits import BodyBudget
from messagegate.server.head_cycle import HEAD_LINES
from messagegate.server.http_protocol import BODY_WRITER, BodyWriter

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

JSON_HEADER = (b"content-type", b"application/json")
# Seconds an upstream call may take before a task starts watching for the client leaving.
WATCH_AFTER = 0.25
T = TypeVar("T")

_REQUEST_ID_BYTES = REQUEST_ID.encode()


class Exchange:
    """The request as the handlers see it, and the answer they give."""

    __slots__ = (
        "budget",
        "extensions",
        "headers",
        "held",
        "log_fields",
        "method",
        "path",
        "privacy",
        "query",
        "receive",
        "request_id",
        "send",
        "served",
        "status",
        "stream_started",
    )

    def __init__(
        self, scope: Scope, receive: Receive, send: Send, budget: BodyBudget | None = None
    ) -> None:
        self.method: str = scope["method"]
        self.path: str = scope["path"]
        self.query: bytes = scope.get("query_string", b"")
        raw_headers = scope["headers"]
        self.headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in raw_headers}
        if len(self.headers) != len(raw_headers):
            self.headers = _joined(raw_headers)
        self.extensions: dict[str, Any] = scope.get("extensions") or {}
        self.receive = receive
        self.send = send
        # Unique, not secret: os.urandom (a syscall) per request would cost more than it buys.
        # The microsecond first: ids in time order are appended to the ledger's index, where ids
        # in random order split pages and dirty one each (shipping a row into a ledger of 200,000
        # went 53 -> 21 us with the second first; the microsecond keeps a batch's rows in order).
        self.request_id = f"req_{time.time_ns() // 1000:014x}{random.getrandbits(40):010x}"
        self.status = 0
        # The exchange's cipher when its request came encrypted (privacy mode).
        self.privacy: PrivateExchange | None = None
        # Body bytes taken from the server's budget, given back when the request ends.
        self.budget = budget
        self.held = 0
        # What the access log line says beyond method, path and status (never prompt text).
        self.log_fields: dict[str, str] = {}
        # For telemetry: how routing answered (``routing.Routed``), when a stream's relay began.
        self.served: Any = None
        self.stream_started = 0.0

    def query_params(self) -> dict[str, str]:
        return {k: v[0] for k, v in parse_qs(self.query.decode("latin-1")).items()}

    async def read_body(self, limit: int) -> bytes:
        declared = self.headers.get("content-length")
        if declared is not None and declared.isdigit():
            length = int(declared)
            if length > limit:
                raise _too_large(limit)
            budget = self.budget
            if budget is not None:  # `_hold`, inlined: once per request
                if budget.held + length > budget.limit:
                    raise budget.exhausted()
                budget.held += length
                self.held = length
        chunks: list[bytes] = []
        size = 0
        more = True
        while more:
            message = await self.receive()
            if message["type"] == "http.disconnect":
                raise ClientDisconnected
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                raise _too_large(limit)
            if size > self.held:
                self._hold(size - self.held)  # a body of undeclared length, as it comes
            chunks.append(chunk)
            more = message.get("more_body", False)
        return b"".join(chunks)

    def _hold(self, size: int) -> None:
        budget = self.budget
        if budget is not None:
            budget.take(size)
            self.held += size

    async def unless_client_leaves(self, work: Awaitable[T]) -> T:
        """Await `work` (after the body was read); cancel it if the client disconnects first."""
        task = asyncio.current_task()
        assert task is not None
        watcher = LateTask(lambda: self._cancel_on_disconnect(task), WATCH_AFTER)
        try:
            return await work
        except asyncio.CancelledError:
            seen = watcher.task
            if seen is None or not seen.done() or seen.cancelled():
                raise
            task.uncancel()
            raise ClientDisconnected from None
        finally:
            watcher.stop()

    async def _cancel_on_disconnect(self, task: asyncio.Task[Any]) -> None:
        while (await self.receive())["type"] != "http.disconnect":
            pass
        task.cancel()

    def body_writer(self) -> BodyWriter:
        """The server's writer for a streamed body (messagegate's ``HttpProtocol`` gives one)."""
        writer = self.extensions.get(BODY_WRITER, {}).get("writer")
        if writer is None:
            raise GatewayError("streaming needs messagegate's HTTP protocol (messagegate serve)")
        return writer  # type: ignore[no-any-return]

    async def start(
        self, status: int, headers: list[tuple[bytes, bytes]], lines: bytes = b""
    ) -> None:
        """`lines`: more headers, as the head's lines (the rate limits' own)."""
        self.status = status
        headers.append((_REQUEST_ID_BYTES, self.request_id.encode()))
        message: Message = {"type": "http.response.start", "status": status, "headers": headers}
        if lines:
            if HEAD_LINES in self.extensions:
                message[HEAD_LINES] = lines
            else:  # another ASGI server: pairs
                headers += header_pairs(lines)
        await self.send(message)

    async def respond(
        self, status: int, body: bytes, extra: dict[str, str] | None = None, lines: bytes = b""
    ) -> None:
        headers = [JSON_HEADER, (b"content-length", b"%d" % len(body)), *encode_headers(extra)]
        await self.start(status, headers, lines)
        await self.send({"type": "http.response.body", "body": body})

    async def respond_json(self, payload: Any, extra: dict[str, str] | None = None) -> None:
        await self.respond(200, orjson.dumps(payload), extra)

    async def respond_error(self, error: GatewayError) -> None:
        body = error.body or error_body(error.error_type, error.message)
        await self.respond(error.status, body, error.headers)


class LateTask:
    """A task that a timer starts only after `delay` seconds; `stop` ends either one.

    Watching for a client that leaves takes a task per request; most answers come before the
    delay, and a disconnect that happened sooner is still seen as soon as the task starts.
    """

    __slots__ = ("_make", "_timer", "task")

    def __init__(self, make: Callable[[], Coroutine[Any, Any, None]], delay: float) -> None:
        self._make = make
        self.task: asyncio.Task[None] | None = None
        self._timer = asyncio.get_running_loop().call_later(delay, self._start)

    def _start(self) -> None:
        self.task = asyncio.create_task(self._make())

    def stop(self) -> None:
        self._timer.cancel()
        if self.task is not None:
            self.task.cancel()


class ClientDisconnected(Exception):
    """The client went away before it was answered."""


def _too_large(limit: int) -> RequestTooLarge:
    return RequestTooLarge(f"request body is larger than the gateway's limit of {limit} bytes")


def _joined(raw_headers: list[tuple[bytes, bytes]]) -> dict[str, str]:
    """Headers with a repeated name (``anthropic-beta`` sent as several lines) joined with ", ",
    as HTTP allows, rather than collapsed to the last line."""
    headers: dict[str, str] = {}
    for name, value in raw_headers:
        key, text = name.decode("latin-1"), value.decode("latin-1")
        headers[key] = f"{headers[key]}, {text}" if key in headers else text
    return headers


def encode_headers(headers: dict[str, str] | None) -> list[tuple[bytes, bytes]]:
    if not headers:
        return []
    return [(k.encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()]
