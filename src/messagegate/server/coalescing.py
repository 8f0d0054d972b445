"""Client writes made during one event-loop turn leave together, at the turn's end.

On loopback, and on any VM, a write to a client that sleeps in ``epoll_wait`` pays for waking
it: at 256 streams a third of the gateway's CPU went to the write syscalls, two thirds of that
to those wake-ups, because each write, made between the turn's reads and translations, found
the client asleep again. Held to the turn's end, a busy turn's writes go out back to back (one
per client, joined), and the client wakes once for all of them. An idle gateway still writes
at once: the first write of a turn after a quiet one leaves immediately, as latency matters
more than batching there. A response head always waits for its body's start, so both leave in
one write.

A turn ends where the loop next runs its ready callbacks (``call_soon``): writes made by socket
callbacks leave right after the turn's reads. A task step is itself a ready callback, so a flush
scheduled by its writes would wait for the next poll's callbacks: at 256 streams, a burst of ~200
reads. The socket callback that wakes a task therefore moves the turn's flush behind the task's
step (``follow``), and a stream's head and end, or a JSON answer, leave in the turn the task ran.
"""

from __future__ import annotations

import asyncio
import weakref
from typing import Any

_HEAD = b"HTTP/1.1 "


class TurnFlusher:
    """Flushes at the end of a loop turn what the turn wrote; an idle gateway writes at once."""

    __slots__ = ("_busy", "_scheduled", "_waiting", "_written")

    def __init__(self) -> None:
        self._waiting: list[CoalescingTransport] = []
        # The flush waiting in the loop's ready callbacks, if one does.
        self._scheduled: asyncio.Handle | None = None
        # The connection this turn's first write went to at once, if it did.
        self._written: CoalescingTransport | None = None
        # Whether the last turn wrote to more than one connection.
        self._busy = False

    def write_now(self, transport: CoalescingTransport) -> bool:
        """Whether a write to `transport` may leave at once: the first of a turn does while
        the gateway is not busy, to keep its latency; otherwise it waits, and the turn's
        writes leave back to back: `transport` is then flushed at the end of this turn."""
        # One call per streamed token: `add` is inlined.
        if self._written is None and not self._busy:
            self._written = transport
            now = True
        else:
            self._waiting.append(transport)
            now = False
        if self._scheduled is None:
            self._scheduled = asyncio.get_running_loop().call_soon(self._flush)
        return now

    def add(self, transport: CoalescingTransport) -> None:
        """Flush `transport` at the end of this turn."""
        self._waiting.append(transport)
        if self._scheduled is None:
            self._scheduled = asyncio.get_running_loop().call_soon(self._flush)

    def follow(self) -> None:
        """A socket callback just woke a task: move this turn's flush behind the task's step,
        so that what the step writes leaves in this turn."""
        if asyncio.current_task() is not None:
            # Woken from a task's step, the task runs in the next turn anyway; moving the
            # flush would only hold this turn's writes for the next poll.
            return
        scheduled = self._scheduled
        if scheduled is not None:
            scheduled.cancel()
        # The running loop, not a stored one: `turn_flusher`'s map must not keep loops alive.
        self._scheduled = asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        # Reset first: a flush can cause writes (a protocol told of back-pressure or a loss),
        # and those belong to the next turn.
        waiting, self._waiting = self._waiting, []
        written, self._scheduled, self._written = self._written, None, None
        if not waiting and written is None:
            return  # a followed task wrote nothing: this was not a turn that wrote
        flushed = sum([transport.flush() for transport in waiting])
        # The connection written at once may have had more written after: it counts once.
        self._busy = flushed + (written is not None and written not in waiting) > 1


_FLUSHERS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, TurnFlusher] = (
    weakref.WeakKeyDictionary()
)


def turn_flusher(loop: asyncio.AbstractEventLoop) -> TurnFlusher:
    """The loop's one flusher, so that all its connections' writes leave together."""
    flusher = _FLUSHERS.get(loop)
    if flusher is None:
        flusher = _FLUSHERS[loop] = TurnFlusher()
    return flusher


class CoalescingTransport:
    """Forwards to a transport; a response head waits for its body, and writes made in a busy
    loop turn wait for the turn's end, joined per connection."""

    __slots__ = ("_pending", "_transport", "_turn", "_waiting_head")

    def __init__(self, transport: asyncio.Transport, turn: TurnFlusher) -> None:
        self._transport = transport
        self._turn = turn
        self._waiting_head: bytes | None = None
        self._pending: list[bytes] | None = None

    def write(self, data: bytes) -> None:
        if self._waiting_head is None and self._pending is None and data[:9] == _HEAD:
            # Only the order of bytes matters for correctness: a body that happens to start
            # like a head merely waits until the end of this loop turn.
            self._waiting_head = data
            self._turn.add(self)
            return
        self.write_body(data)

    def write_body(self, data: bytes) -> None:
        """``write`` of bytes that are known not to start a response (a body's chunk)."""
        head, pending = self._waiting_head, self._pending
        if head is not None:
            self._waiting_head = None
            data = head + data
        if pending is not None:
            pending.append(data)
        elif self._turn.write_now(self):
            self._transport.write(data)
        else:
            self._pending = [data]

    def flush(self) -> bool:
        """Send what waits; say whether anything did."""
        head, pending = self._waiting_head, self._pending
        self._waiting_head = self._pending = None
        if pending is None:
            if head is None:
                return False
            data = head
        else:
            data = pending[0] if len(pending) == 1 else b"".join(pending)
        # A client that left meanwhile gets nothing; uvicorn has seen the loss already.
        if not self._transport.is_closing():
            self._transport.write(data)
        return True

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def abort(self) -> None:
        self._waiting_head = self._pending = None
        self._transport.abort()

    def get_write_buffer_size(self) -> int:
        waiting = len(self._waiting_head or b"") + sum(map(len, self._pending or ()))
        return self._transport.get_write_buffer_size() + waiting

    # What else uvicorn's protocol asks of its transport, forwarded one by one: a `__getattr__`
    # would put every attribute read of this class on CPython's slow path (~250 instructions
    # each, several per streamed token).

    def is_closing(self) -> bool:
        return self._transport.is_closing()

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self._transport.get_extra_info(name, default)

    def pause_reading(self) -> None:
        self._transport.pause_reading()

    def resume_reading(self) -> None:
        self._transport.resume_reading()

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self._transport.set_protocol(protocol)

    def get_protocol(self) -> asyncio.BaseProtocol:
        return self._transport.get_protocol()
