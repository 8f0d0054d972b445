"""Writing an event stream to the client: straight from the upstream's socket callback, with
back-pressure both ways, pings during silence, disconnects and late failures."""

from __future__ import annotations

import asyncio
import enum
import time
from collections.abc import Callable
from typing import Any

from messagegate.api.envelope import error_payload
from messagegate.api.sse import PING, encode_event
from messagegate.errors import GatewayError, GatewayOverloaded
from messagegate.providers.base import EventStream
from messagegate.server.exchange import Exchange
from messagegate.server.http_protocol import BodyWriter

SSE_HEADERS = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache"),
    (b"x-accel-buffering", b"no"),
]


class StreamOutcome(enum.Enum):
    COMPLETED = "completed"
    FAILED = "failed"
    DISCONNECTED = "disconnected"


class _ClientStream:
    """The client's side of one relay: the ``Channel`` the upstream's stream writes to (each
    part at once, its last part kept for the body's end, which the relay's task sends) and the
    ``BodyListener`` the client's socket reports to: its back-pressure pauses the upstream's
    reading, its departure cancels the relay; a timer pings it after `ping` seconds of silence.
    """

    __slots__ = (
        "disconnected",
        "last",
        "ping_after",
        "reading_paused",
        "relay",
        "stream",
        "timer",
        "write",
        "writer",
    )

    def __init__(
        self,
        writer: BodyWriter,
        stream: EventStream,
        relay: asyncio.Task[StreamOutcome],
        ping: float,
    ) -> None:
        self.writer = writer
        self.write = writer.write
        self.stream = stream
        self.relay = relay
        self.ping_after = ping
        self.last = b""
        self.disconnected = False
        self.reading_paused = False
        self.timer = asyncio.get_running_loop().call_later(ping, self._ping)
        writer.listen(self)

    def end(self, last: bytes) -> None:
        self.last = last

    def pause_reading(self) -> None:
        self.reading_paused = True
        self.stream.pause_reading()

    def resume_reading(self) -> None:
        self.reading_paused = False
        self.stream.resume_reading()

    def lost(self) -> None:
        self.disconnected = True
        # Nothing more is read, so nothing more is counted as delivered.
        self.stream.close()
        self.relay.cancel()

    def _ping(self) -> None:
        quiet = time.monotonic() - self.writer.last_write
        if quiet >= self.ping_after:
            if not self.reading_paused:
                self.writer.write(PING)
            quiet = 0.0
        self.timer = asyncio.get_running_loop().call_later(self.ping_after - quiet, self._ping)

    def stop(self) -> None:
        self.timer.cancel()
        self.writer.listen(None)


async def relay(
    exchange: Exchange,
    writer: BodyWriter,
    stream: EventStream,
    headers: list[tuple[bytes, bytes]],
    lines: bytes,
    ping: float,
    ending: Callable[[StreamOutcome], None],
) -> StreamOutcome:
    """Send the stream to the client through `writer`; say how it ended, to `ending` too,
    before the last byte leaves (or once the client is gone)."""
    if not writer.framed:
        writer.begin()
    await exchange.start(200, [*SSE_HEADERS, *headers], lines)
    if stream.ended:
        # The whole stream is here: head, events and the body's end leave in one write.
        ending(StreamOutcome.COMPLETED)
        await exchange.send(
            _last(writer, stream.first) if not writer.framed else _end(stream.first)
        )
        return StreamOutcome.COMPLETED
    task: asyncio.Task[StreamOutcome] = asyncio.current_task()  # type: ignore[assignment]
    client = _ClientStream(writer, stream, task, ping)
    outcome = StreamOutcome.COMPLETED
    try:
        writer.write(stream.first)
        await stream.pipe(client)
        tail = client.last
    except GatewayError as error:
        outcome = StreamOutcome.FAILED
        tail = _error_event(exchange, error)
    except asyncio.CancelledError:
        task.uncancel()
        if client.disconnected:
            exchange.log_fields["disconnected"] = "client"
            ending(StreamOutcome.DISCONNECTED)
            return StreamOutcome.DISCONNECTED
        # The server's shutdown grace ended with the stream still open: it ends with an
        # `error` event the client can act on, not a cut connection and a traceback.
        outcome = StreamOutcome.FAILED
        tail = _error_event(exchange, GatewayOverloaded(SHUTTING_DOWN))
    finally:
        client.stop()
        stream.close()
    ending(outcome)
    await exchange.send(_last(writer, tail) if not writer.framed else _end(tail))
    return outcome


SHUTTING_DOWN = "the gateway is shutting down; retry the request"


def _error_event(exchange: Exchange, error: GatewayError) -> bytes:
    exchange.log_fields["stream_error"] = error.error_type
    return encode_event("error", error_payload(error.error_type, error.message))


def _end(last: bytes) -> dict[str, Any]:
    """The message that ends the body with its last bytes."""
    return {"type": "http.response.body", "body": last}


def _last(writer: BodyWriter, last: bytes) -> dict[str, Any]:
    """An unframed body (HTTP/1.0) goes all by the writer: its end carries nothing."""
    writer.write(last)
    return _end(b"")
