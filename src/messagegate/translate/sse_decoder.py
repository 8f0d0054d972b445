"""An incremental, I/O-free decoder of server-sent event streams (the WHATWG event-stream format).

No maintained SSE library exposes a bytes-in, events-out state machine without its own HTTP client,
so this one is ours: it is fed raw chunks as they arrive and returns the events they complete.
"""

from __future__ import annotations

from typing import NamedTuple


class ServerSentEvent(NamedTuple):
    event: str
    data: str


def new_event(name: str, data: str) -> ServerSentEvent:
    """An event named `name` (or "message"); tuple.__new__ skips the Python-level __new__
    that calling a NamedTuple class goes through."""
    return tuple.__new__(ServerSentEvent, (name or "message", data))


class SSEDecoder:
    """Feed byte chunks in; get complete events out. Comments and ``id``/``retry`` are ignored."""

    def __init__(self) -> None:
        self._buffer = b""
        self._event = ""
        self._data: list[str] = []

    def feed(self, chunk: bytes) -> list[ServerSentEvent]:
        if self._buffer:
            chunk = self._buffer + chunk
        complete, newline, self._buffer = chunk.rpartition(b"\n")
        if not newline:
            return []
        # Only whole lines are decoded, so a UTF-8 sequence split across chunks stays intact.
        text = complete.decode()
        event = self._whole_event(text)
        return [event] if event is not None else self._lines(text)

    @property
    def between_events(self) -> bool:
        """No part of an event is buffered: the next chunk starts a new one."""
        return not self._buffer and not self._data and not self._event

    def finish(self) -> list[ServerSentEvent]:
        """The stream ended: a last event without its blank line still counts."""
        return self.feed(b"\n\n") if self._buffer or self._data else []

    def _whole_event(self, text: str) -> ServerSentEvent | None:
        """The usual chunk, exactly one event: an optional ``event: `` line, one ``data: `` line."""
        if self._data or "\r" in text:
            return None
        name, start = self._event, 0
        if text.startswith("event: "):
            start = text.find("\n") + 1
            name = text[7 : start - 1]
        if not text.startswith("data: ", start) or text.find("\n", start) != len(text) - 1:
            return None
        self._event = ""
        return new_event(name, text[start + 6 : -1])

    def _lines(self, text: str) -> list[ServerSentEvent]:
        """Any other chunk, line by line; a line without a colon is a field with no value."""
        lines = text.split("\n")
        if "\r" in text:
            lines = [line.removesuffix("\r") for line in lines]
        events: list[ServerSentEvent] = []
        name, data = self._event, self._data
        for line in lines:
            if not line:
                if data:
                    events.append(new_event(name, "\n".join(data)))
                    data = []
                name = ""
            elif line.startswith("data:"):
                data.append(line[6:] if line[5:6] == " " else line[5:])
            elif line.startswith("event:"):
                name = line[7:] if line[6:7] == " " else line[6:]
            elif line == "data":
                data.append("")
            elif line == "event":
                name = ""
        self._event, self._data = name, data
        return events
