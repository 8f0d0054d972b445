"""An incremental, I/O-free decoder of server-sent event streams (the WHATWG event-stream format).

No maintained SSE library exposes a bytes-in, events-out state machine without its own HTTP client,
so this one is ours: it is fed raw chunks as they arrive and returns the events they complete.
"""

from __future__ import annotations

from typing import NamedTuple

from messagegate.errors import UpstreamProtocolError


class ServerSentEvent(NamedTuple):
    event: str
    data: str


def new_event(name: str, data: str) -> ServerSentEvent:
    """An event named `name` (or "message"); tuple.__new__ skips the Python-level __new__
    that calling a NamedTuple class goes through."""
    return tuple.__new__(ServerSentEvent, (name or "message", data))


class SSEDecoder:
    """Feed byte chunks in; get complete events out. Comments and ``id``/``retry`` are ignored."""

    def __init__(self, max_event: int = 16 * 1024 * 1024) -> None:
        # The unfinished line: its parts, not one growing bytes (re-joined on every chunk, a
        # long line would cost time quadratic in its length).
        self._pending: list[bytes] = []
        self._pending_size = 0
        self._event = ""
        self._data: list[str] = []
        self._data_size = 0
        self.max_event = max_event

    def feed(self, chunk: bytes) -> list[ServerSentEvent]:
        if self._pending:
            if 10 not in chunk:  # still no line break: keep the part
                self._keep(chunk)
                return []
            self._pending.append(chunk)
            chunk = b"".join(self._pending)
            self._pending.clear()
            self._pending_size = 0
        complete, newline, rest = chunk.rpartition(b"\n")
        if rest:
            self._keep(rest)
        if not newline:
            return []
        # Only whole lines are decoded, so a UTF-8 sequence split across chunks stays intact.
        try:
            text = complete.decode()
        except UnicodeDecodeError:
            raise UpstreamProtocolError("the upstream sent an event that is not UTF-8") from None
        event = self._whole_event(text)
        return [event] if event is not None else self._lines(text)

    def _keep(self, part: bytes) -> None:
        self._pending.append(part)
        self._pending_size += len(part)
        if self._pending_size > self.max_event:
            raise self._too_large()

    def _too_large(self) -> UpstreamProtocolError:
        return UpstreamProtocolError(f"the upstream sent an event over {self.max_event} bytes")

    @property
    def between_events(self) -> bool:
        """No part of an event is buffered: the next chunk starts a new one."""
        return not self._pending and not self._data and not self._event

    def finish(self) -> list[ServerSentEvent]:
        """The stream ended: a last event without its blank line still counts."""
        return self.feed(b"\n\n") if self._pending or self._data else []

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
                self._data_size = 0
                name = ""
            elif line.startswith("data:"):
                data.append(line[6:] if line[5:6] == " " else line[5:])
                self._data_size += len(line)
                if self._data_size > self.max_event:
                    raise self._too_large()
            elif line.startswith("event:"):
                name = line[7:] if line[6:7] == " " else line[6:]
            elif line == "data":
                data.append("")
            elif line == "event":
                name = ""
        self._event, self._data = name, data
        return events
