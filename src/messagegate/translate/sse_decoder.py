"""An incremental, I/O-free decoder of server-sent event streams (the WHATWG event-stream format).

No maintained SSE library exposes a bytes-in, events-out state machine without its own HTTP client,
so this one is ours: it is fed raw chunks as they arrive and returns the events they complete.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(slots=True)
class ServerSentEvent:
    event: str
    data: str


class SSEDecoder:
    """Feed byte chunks in; get complete events out. Comments and ``id``/``retry`` are ignored."""

    def __init__(self) -> None:
        self._buffer = b""
        self._event = ""
        self._data: list[str] = []

    def feed(self, chunk: bytes) -> list[ServerSentEvent]:
        lines = (self._buffer + chunk).split(b"\n")
        self._buffer = lines.pop()
        events: list[ServerSentEvent] = []
        for line in lines:
            event = self._line(line.removesuffix(b"\r").decode())
            if event is not None:
                events.append(event)
        return events

    def finish(self) -> list[ServerSentEvent]:
        """The stream ended: a last event without its blank line still counts."""
        return self.feed(b"\n\n") if self._buffer or self._data else []

    def _line(self, line: str) -> ServerSentEvent | None:
        if not line:
            return self._dispatch()
        if line.startswith(":"):
            return None
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "data":
            self._data.append(value)
        elif name == "event":
            self._event = value
        return None

    def _dispatch(self) -> ServerSentEvent | None:
        if not self._data:
            self._event = ""
            return None
        event = ServerSentEvent(self._event or "message", "\n".join(self._data))
        self._event = ""
        self._data = []
        return event
