"""The served protocol's transport: a response head leaves with its body's start, and a busy
loop turn's writes leave together at the turn's end, one write per connection."""

from __future__ import annotations

import asyncio
import gc
import weakref
from typing import Any
from unittest import mock

from messagegate.server.coalescing import CoalescingTransport, TurnFlusher, turn_flusher

HEAD = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n\r\n"


class RecordingTransport:
    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.closed = False
        self.aborted = False

    def write(self, data: bytes) -> None:
        self.writes.append(data)

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.aborted = True

    def get_write_buffer_size(self) -> int:
        return 0

    def is_closing(self) -> bool:
        return self.closed or self.aborted


def on(turn: TurnFlusher, inner: RecordingTransport) -> CoalescingTransport:
    transport: Any = inner
    return CoalescingTransport(transport, turn)


def connections(count: int) -> tuple[list[CoalescingTransport], list[RecordingTransport]]:
    """`count` connections sharing one flusher, as all of a loop's connections do."""
    turn = TurnFlusher()
    inners = [RecordingTransport() for _ in range(count)]
    return [on(turn, inner) for inner in inners], inners


async def end_of_turn() -> None:
    await asyncio.sleep(0)


async def make_busy(transports: list[CoalescingTransport]) -> None:
    """One turn that writes to two connections: the next turn counts as busy."""
    transports[0].write(b"a")
    transports[1].write(b"b")
    await end_of_turn()


async def test_a_head_and_the_body_after_it_leave_in_one_write() -> None:
    (transport,), (inner,) = connections(1)
    transport.write(HEAD)
    assert inner.writes == []
    assert transport.get_write_buffer_size() == len(HEAD)
    transport.write(b'{"ok":true}')
    assert inner.writes == [HEAD + b'{"ok":true}']


async def test_a_head_alone_is_written_at_the_end_of_the_loop_turn() -> None:
    (transport,), (inner,) = connections(1)
    transport.write(HEAD)
    await end_of_turn()
    assert inner.writes == [HEAD]


async def test_a_quiet_turn_writes_its_first_write_at_once_and_holds_the_rest() -> None:
    (first, second), (inner_first, inner_second) = connections(2)
    first.write(b"one")
    second.write(b"two")
    second.write(b"three")
    assert (inner_first.writes, inner_second.writes) == ([b"one"], [])
    assert second.get_write_buffer_size() == len(b"twothree")
    await end_of_turn()
    assert inner_second.writes == [b"twothree"]


async def test_after_a_busy_turn_every_write_waits_for_the_end_of_the_turn() -> None:
    transports, inners = connections(3)
    await make_busy(transports)
    for inner in inners:
        inner.writes.clear()
    for index, transport in enumerate(transports):
        transport.write(b"event %d;" % index)
        transport.write(b"event %d again;" % index)
    assert [inner.writes for inner in inners] == [[], [], []]
    await end_of_turn()
    assert [inner.writes for inner in inners] == [
        [b"event %d;event %d again;" % (index, index)] for index in range(3)
    ]


async def test_a_turn_with_one_write_makes_the_next_one_quiet_again() -> None:
    transports, inners = connections(2)
    await make_busy(transports)
    transports[0].write(b"alone")
    assert inners[0].writes == [b"a"]
    await end_of_turn()
    transports[1].write(b"at once")
    assert inners[1].writes == [b"b", b"at once"]


async def test_a_turn_that_wrote_twice_to_one_connection_leaves_the_next_one_quiet() -> None:
    (transport, other), (inner, inner_other) = connections(2)
    transport.write(b"at once")
    transport.write(b" and at the end of the turn")
    await end_of_turn()
    assert inner.writes == [b"at once", b" and at the end of the turn"]
    other.write(b"still at once")
    assert inner_other.writes == [b"still at once"]


async def test_closing_writes_what_waits_first_and_aborting_drops_it() -> None:
    (transport,), (inner,) = connections(1)
    transport.write(HEAD)
    transport.close()
    assert (inner.writes, inner.closed) == ([HEAD], True)
    assert transport.is_closing()

    (transport,), (inner,) = connections(1)
    transport.write(HEAD)
    transport.abort()
    await end_of_turn()
    assert (inner.writes, inner.aborted) == ([], True)


async def test_a_connection_lost_before_the_end_of_the_turn_gets_nothing() -> None:
    transports, inners = connections(2)
    await make_busy(transports)
    inners[0].writes.clear()
    transports[0].write(b"too late")
    inners[0].closed = True
    await end_of_turn()
    assert inners[0].writes == []


async def test_a_body_that_looks_like_a_head_keeps_its_order() -> None:
    (transport,), (inner,) = connections(1)
    transport.write(b"chunk one")
    transport.write(b"HTTP/1.1 is how this body starts")
    transport.write(b"chunk three")
    await end_of_turn()
    assert b"".join(inner.writes) == (
        b"chunk one" + b"HTTP/1.1 is how this body starts" + b"chunk three"
    )


def test_a_loop_with_a_flusher_can_still_be_collected() -> None:
    loop = asyncio.new_event_loop()
    assert turn_flusher(loop) is turn_flusher(loop)
    gone = weakref.ref(loop)
    loop.close()
    del loop
    gc.collect()
    assert gone() is None


async def test_a_write_caused_by_a_flush_leaves_at_the_end_of_the_next_turn() -> None:
    turn = TurnFlusher()
    inner_second = RecordingTransport()
    second = on(turn, inner_second)

    class WritesOnWrite(RecordingTransport):
        """A transport whose write makes a protocol write elsewhere (as back-pressure may)."""

        def write(self, data: bytes) -> None:
            super().write(data)
            second.write(b"caused")

    causing = WritesOnWrite()
    first = on(turn, causing)
    await make_busy([on(turn, RecordingTransport()) for _ in range(2)])
    first.write(b"cause")
    await end_of_turn()
    assert (causing.writes, inner_second.writes) == ([b"cause"], [])
    await end_of_turn()
    assert inner_second.writes == [b"caused"]


async def test_a_task_woken_by_a_socket_callback_writes_in_the_turn_it_runs() -> None:
    (first, second, woken), (_, _, inner_woken) = connections(3)
    turn = first._turn
    await make_busy([first, second])
    loop = asyncio.get_running_loop()
    answer: asyncio.Future[None] = loop.create_future()
    seen_by_next_poll: list[list[bytes]] = []

    async def answered_task() -> None:
        await answer
        woken.write(b"answer")

    def next_poll_callback() -> None:
        seen_by_next_poll.append(list(inner_woken.writes))

    def socket_callback() -> None:
        # Two streams' tokens: the turn stays busy, and its flush is scheduled.
        first.write(b"token")
        second.write(b"token")
        # A callback that runs before the task: what it schedules runs in the next turn, as
        # the next poll's socket callbacks do.
        loop.call_soon(loop.call_soon, next_poll_callback)
        answer.set_result(None)
        turn.follow()

    task = asyncio.create_task(answered_task())
    await end_of_turn()  # the task waits for its answer
    loop.call_soon(socket_callback)
    await task
    await end_of_turn()
    await end_of_turn()
    assert seen_by_next_poll == [[b"answer"]]


async def test_a_woken_task_that_writes_nothing_leaves_a_busy_gateway_busy() -> None:
    (first, second), (inner_first, _) = connections(2)
    await make_busy([first, second])
    # A socket callback wakes a task that writes nothing.
    asyncio.get_running_loop().call_soon(first._turn.follow)
    await end_of_turn()
    await end_of_turn()
    first.write(b"token")
    assert inner_first.writes == [b"a"]  # still held: the turn before wrote nothing
    await end_of_turn()
    assert inner_first.writes == [b"a", b"token"]


async def test_a_wake_up_inside_a_task_does_not_hold_the_turns_writes() -> None:
    (first, second), (inner_first, _) = connections(2)
    turn = first._turn
    await make_busy([first, second])
    loop = asyncio.get_running_loop()
    seen_by_next_poll: list[list[bytes]] = []

    def next_poll_callback() -> None:
        seen_by_next_poll.append(list(inner_first.writes))

    async def task_that_wakes_another() -> None:
        loop.call_soon(next_poll_callback)
        turn.follow()

    task = asyncio.create_task(task_that_wakes_another())
    # Written after the task's step was scheduled: the flush runs after the step, this turn.
    first.write(b"token")
    await task
    await end_of_turn()
    assert seen_by_next_poll == [[b"a", b"token"]]


def test_what_uvicorn_asks_of_its_transport_is_forwarded() -> None:
    inner = mock.Mock(spec=asyncio.Transport)
    inner.is_closing.return_value = False
    inner.get_extra_info.return_value = ("127.0.0.1", 8080)
    transport = CoalescingTransport(inner, TurnFlusher())
    protocol = asyncio.Protocol()
    assert transport.is_closing() is False
    assert transport.get_extra_info("sockname") == ("127.0.0.1", 8080)
    transport.pause_reading()
    transport.resume_reading()
    transport.set_protocol(protocol)
    transport.get_protocol()
    assert inner.method_calls == [
        mock.call.is_closing(),
        mock.call.get_extra_info("sockname", None),
        mock.call.pause_reading(),
        mock.call.resume_reading(),
        mock.call.set_protocol(protocol),
        mock.call.get_protocol(),
    ]
