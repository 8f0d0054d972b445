"""A lean closed-loop HTTP/1.1 load client (asyncio Protocol + httptools) that times first tokens.

Each of N workers holds one keep-alive connection and sends the same pre-encoded request in a
loop until the deadline. Per request it records the latency to the last byte and, for streams,
the time to the first body chunk holding ``first_marker`` (the first text token).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import httptools

_TAIL = 64
_CONNECT_TIMEOUT = 5.0


@dataclass(frozen=True, slots=True)
class Markers:
    """What the first token looks like, and what only a complete answer ends with."""

    first: bytes
    end: bytes


ANTHROPIC_STREAM = Markers(b"content_block_delta", b"message_stop")
OPENAI_STREAM = Markers(b'"delta":{"content"', b"[DONE]")
JSON_ANSWER = Markers(b"", b"}")


@dataclass(slots=True)
class Tally:
    """Live counts of one load run; the samples are those that ended before the deadline."""

    latencies: list[float] = field(default_factory=list)
    ttfts: list[float] = field(default_factory=list)
    started: int = 0
    ok: int = 0
    errors: int = 0
    incomplete: int = 0
    late: int = 0
    # Answers that ended during the warm-up, before the measured window opened.
    early: int = 0
    elapsed: float = 0.0


def encode_request(
    host: str, port: int, path: str, body: bytes, headers: Mapping[str, str]
) -> bytes:
    lines = [f"POST {path} HTTP/1.1", f"host: {host}:{port}", "content-type: application/json"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    lines.append(f"content-length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


class _Connection(asyncio.Protocol):
    """One keep-alive connection; one request in flight at a time."""

    def __init__(self, markers: Markers) -> None:
        self.markers = markers
        self.parser = httptools.HttpResponseParser(self)
        self.transport: asyncio.Transport | None = None
        self.waiter: asyncio.Future[None] | None = None
        self.sent = 0.0
        self.first: float | None = None
        self.tail = b""
        self.status = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A stream socket's transport, which the protocol API types as its base class.
        self.transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        self._fail(ConnectionError("connection closed"))

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(exc)
            self.close()

    def on_headers_complete(self) -> None:
        self.status = self.parser.get_status_code()

    def on_body(self, body: bytes) -> None:
        window = self.tail + body
        if self.first is None and self.markers.first in window:
            self.first = time.perf_counter()
        self.tail = window[-_TAIL:]

    def on_message_complete(self) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(None)

    def _fail(self, exc: Exception) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(exc)

    async def exchange(self, request: bytes) -> tuple[float, float | None, bool]:
        """Latency, time to first token, and whether the answer was a complete 2xx."""
        if self.transport is None:
            raise ConnectionError("not connected")
        self.waiter = asyncio.get_running_loop().create_future()
        self.first, self.tail, self.status = None, b"", 0
        self.sent = time.perf_counter()
        self.transport.write(request)
        await self.waiter
        latency = time.perf_counter() - self.sent
        ttft = None if self.first is None else self.first - self.sent
        complete = 200 <= self.status < 300 and self.markers.end in self.tail
        return latency, ttft, complete

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


async def _connect(port: int, markers: Markers) -> _Connection:
    loop = asyncio.get_running_loop()
    connect = loop.create_connection(lambda: _Connection(markers), "127.0.0.1", port)
    _, protocol = await asyncio.wait_for(connect, _CONNECT_TIMEOUT)
    return protocol


async def _worker(
    port: int,
    request: bytes,
    markers: Markers,
    window: tuple[float, float],
    tally: Tally,
    limit: int | None,
) -> None:
    opens, deadline = window
    connection: _Connection | None = None
    try:
        while time.monotonic() < deadline and (limit is None or tally.started < limit):
            if connection is None or connection.transport is None:
                connection = await _connect(port, markers)
            tally.started += 1
            try:
                latency, ttft, complete = await connection.exchange(request)
            except (ConnectionError, httptools.HttpParserError):
                tally.errors += 1
                connection = None
                await asyncio.sleep(0.01)
                continue
            ended = time.monotonic()
            if ended < opens:
                tally.early += 1
                continue
            _record(tally, latency, ttft, complete, ended <= deadline)
    finally:
        if connection is not None:
            connection.close()


def _record(
    tally: Tally, latency: float, ttft: float | None, complete: bool, in_time: bool
) -> None:
    if not in_time:
        return
    if not complete:
        tally.incomplete += 1
        return
    tally.ok += 1
    tally.latencies.append(latency)
    if ttft is not None:
        tally.ttfts.append(ttft)


async def run_load(
    port: int,
    request: bytes,
    markers: Markers,
    *,
    concurrency: int,
    duration: float,
    limit: int | None = None,
    tally: Tally | None = None,
    warmup: float = 0.0,
    on_window: Callable[[], None] | None = None,
) -> Tally:
    """Run N workers until ``duration`` elapses (or ``limit`` requests started); bounded in time.

    With a ``warmup``, the load runs without a break through it and only answers that end in
    the window after it count (``on_window`` is called as the window opens): the measurement
    starts in the steady state, not with every worker sending its first request at once.
    """
    tally = tally if tally is not None else Tally()
    opens = time.monotonic() + warmup
    deadline = opens + duration
    if on_window is not None:
        asyncio.get_running_loop().call_later(warmup, on_window)
    workers = [
        asyncio.create_task(_worker(port, request, markers, (opens, deadline), tally, limit))
        for _ in range(concurrency)
    ]
    _, pending = await asyncio.wait(workers, timeout=warmup + duration + 0.05)
    tally.elapsed = time.monotonic() - opens
    for task in pending:
        task.cancel()
    results = await asyncio.gather(*workers, return_exceptions=True)
    tally.errors += sum(
        1 for r in results if isinstance(r, Exception) and not isinstance(r, asyncio.CancelledError)
    )
    return tally
