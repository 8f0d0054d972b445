"""Writing an event stream to the client: pings during silence, disconnects, late failures."""

from __future__ import annotations

import asyncio
import enum
import time
from typing import Any

from messagegate.api.envelope import error_payload
from messagegate.api.sse import PING, encode_event
from messagegate.errors import GatewayError
from messagegate.providers.base import EventStream
from messagegate.server.exchange import WATCH_AFTER, Exchange, LateTask, Receive, Send

SSE_HEADERS = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache"),
    (b"x-accel-buffering", b"no"),
]


class StreamOutcome(enum.Enum):
    COMPLETED = "completed"
    FAILED = "failed"
    DISCONNECTED = "disconnected"


class _Writer:
    """Writes body chunks for the relay and the ping timer; remembers when it last wrote."""

    def __init__(self, send: Send) -> None:
        self.send = send
        self.last_write = time.monotonic()
        self.disconnected = False
        # A ping is only sent while no relay write is in flight, so writes never interleave.
        self.writing = False

    async def write(self, data: bytes) -> None:
        self.writing = True
        try:
            await self.send({"type": "http.response.body", "body": data, "more_body": True})
        finally:
            self.writing = False
        self.last_write = time.monotonic()

    async def ping(self) -> None:
        if not self.writing:
            await self.write(PING)


async def relay(
    exchange: Exchange, stream: EventStream, headers: list[tuple[bytes, bytes]], ping: float
) -> StreamOutcome:
    """Send the stream to the client, pinging during silence; say how it ended."""
    await exchange.start(200, [*SSE_HEADERS, *headers])
    writer = _Writer(exchange.send)
    task = asyncio.current_task()
    assert task is not None
    watcher = LateTask(lambda: _watch(exchange.receive, writer, ping, task), min(ping, WATCH_AFTER))
    outcome = StreamOutcome.COMPLETED
    try:
        await writer.write(stream.first)
        send = exchange.send
        async for chunk in stream.rest:
            # writer.write inlined: this line runs once per token.
            writer.writing = True
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
            writer.writing = False
            writer.last_write = time.monotonic()
    except GatewayError as error:
        outcome = StreamOutcome.FAILED
        exchange.log_fields["stream_error"] = error.error_type
        await writer.write(encode_event("error", error_payload(error.error_type, error.message)))
    except asyncio.CancelledError:
        if not writer.disconnected:
            raise
        task.uncancel()
        outcome = StreamOutcome.DISCONNECTED
        exchange.log_fields["disconnected"] = "client"
    finally:
        watcher.stop()
        await stream.rest.aclose()
    if not writer.disconnected:
        await exchange.send({"type": "http.response.body", "body": b"", "more_body": False})
    return outcome


async def _watch(receive: Receive, writer: _Writer, ping: float, relay: asyncio.Task[Any]) -> None:
    """Ping the client after `ping` seconds of silence; cancel the relay if the client leaves."""
    while True:
        wait = max(0.001, writer.last_write + ping - time.monotonic())
        try:
            async with asyncio.timeout(wait):
                message = await receive()
        except TimeoutError:
            if time.monotonic() - writer.last_write >= ping:
                await writer.ping()
            continue
        if message["type"] == "http.disconnect":
            writer.disconnected = True
            relay.cancel()
            return
