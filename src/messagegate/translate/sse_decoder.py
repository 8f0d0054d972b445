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
        complete, newline, self._buffer = (self._buffer + chunk).rpartition(b"\n")
        if not newline:
            return []
        # Only whole lines are decoded, so a UTF-8 sequence split across chunks stays intact.
        events: list[ServerSentEvent] = []
        for line in complete.decode().split("\n"):
            if not line or line == "\r":
                event = self._dispatch()
                if event is not None:
                    events.append(event)
            elif line[0] != ":":
                self._field(line.removesuffix("\r"))
        return events

    def finish(self) -> list[ServerSentEvent]:
        """The stream ended: a last event without its blank line still counts."""
        return self.feed(b"\n\n") if self._buffer or self._data else []

    def _field(self, line: str) -> None:
        name, _, value = line.partition(":")
        if value[:1] == " ":
            value = value[1:]
        if name == "data":
            self._data.append(value)
        elif name == "event":
            self._event = value

    def _dispatch(self) -> ServerSentEvent | None:
        if not self._data:
            self._event = ""
            return None
        event = ServerSentEvent(self._event or "message", "\n".join(self._data))
        self._event = ""
        self._data = []
        return event
