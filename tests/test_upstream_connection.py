"""One upstream connection's lifecycle, driven by byte chunks through a fake transport: every
ending (whole and kept, whole and closed, dropped, timed out, unparsable, aborted) and reuse."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import cast

import pytest

from fakes.raw_http import chunked, response
from messagegate.providers.connection import (
    AnswerTooLarge,
    ConnectionDropped,
    IllegalTransition,
    Phase,
    ProtocolViolation,
    ReadTimeout,
    TransportError,
    UpstreamConnection,
)

REQUEST = b"POST /v1/chat/completions HTTP/1.1\r\nhost: up\r\ncontent-length: 2\r\n\r\n{}"
CLOSE_DELIMITED = b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\n\r\n"


class FakeTimer:
    def __init__(self, when: float, callback: Callable[[], None]) -> None:
        self.when, self.callback, self.cancelled = when, callback, False

    def cancel(self) -> None:
        self.cancelled = True


class FakeLoop:
    """The loop's clock and timers under the test's hand; futures from the real loop."""

    def __init__(self) -> None:
        self.now = 100.0
        self.timers: list[FakeTimer] = []
        self.real = asyncio.get_running_loop()

    def time(self) -> float:
        return self.now

    def call_at(self, when: float, callback: Callable[[], None]) -> FakeTimer:
        timer = FakeTimer(when, callback)
        self.timers.append(timer)
        return timer

    def create_future(self) -> asyncio.Future[None]:
        return self.real.create_future()

    def advance(self, seconds: float) -> None:
        """Move the clock and run the timers now due (each one once)."""
        self.now += seconds
        due = [t for t in self.timers if not t.cancelled and t.when <= self.now]
        self.timers = [t for t in self.timers if t not in due]
        for timer in due:
            timer.callback()


class FakeTransport:
    def __init__(self) -> None:
        self.written: list[bytes] = []
        self.aborted = False
        self.reading = True

    def write(self, data: bytes) -> None:
        self.written.append(data)

    def abort(self) -> None:
        self.aborted = True

    def pause_reading(self) -> None:
        self.reading = False

    def resume_reading(self) -> None:
        self.reading = True


class Echo:
    """A body translator that gives each chunk back as it came (or raises)."""

    def __init__(self, fail: bool = False) -> None:
        self.fail = fail

    def feed(self, chunk: bytes) -> bytes:
        if self.fail:
            raise ValueError("the client left")
        return chunk

    def end(self) -> bytes:
        return b""


class Sink:
    """A channel that records what it was given."""

    def __init__(self) -> None:
        self.data: list[bytes] = []
        self.ended = False

    def write(self, data: bytes) -> None:
        self.data.append(data)

    def end(self, last: bytes) -> None:
        assert last == b""
        self.ended = True


class Rig:
    def __init__(self, max_answer: int = 1 << 20) -> None:
        self.loop = FakeLoop()
        self.transport = FakeTransport()
        self.lost: list[UpstreamConnection] = []
        self.connection = UpstreamConnection(
            cast(asyncio.AbstractEventLoop, self.loop), self.lost.append, max_answer=max_answer
        )
        self.connection.connection_made(cast(asyncio.Transport, self.transport))

    def send(self, read_timeout: float = 5, total: float = 60) -> None:
        self.connection.send(REQUEST, read_timeout, total)

    def feed(self, data: bytes, size: int | None = None) -> None:
        """The upstream's bytes, in reads of `size` bytes (all in one read by default)."""
        step = size or len(data) or 1
        for start in range(0, len(data), step):
            self.connection.data_received(data[start : start + step])


def phase(rig: Rig) -> Phase:
    """The connection's state, read afresh (not narrowed by an earlier assertion)."""
    return rig.connection.state


@pytest.fixture
async def rig() -> Rig:
    return Rig()


@pytest.mark.parametrize("size", [None, 1, 7])
async def test_a_whole_keep_alive_answer_leaves_the_connection_idle_and_reusable(
    rig: Rig, size: int | None
) -> None:
    assert phase(rig) is Phase.IDLE
    rig.send()
    assert (rig.connection.state, rig.transport.written) == (Phase.SENT, [REQUEST])
    rig.feed(response(b'{"n":0}', headers={"x-request-id": "r1"}), size)
    await rig.connection.wait_headers()
    assert (rig.connection.status, rig.connection.headers()["x-request-id"]) == (200, "r1")
    assert await rig.connection.read_all() == b'{"n":0}'
    assert phase(rig) is Phase.COMPLETE
    rig.connection.finished()
    assert phase(rig) is Phase.IDLE
    assert rig.connection.reusable
    assert all(timer.cancelled for timer in rig.loop.timers)

    rig.send()  # reused: the second answer is parsed afresh
    rig.feed(chunked(b"data: a\n\n", b"data: b\n\n"), size)
    await rig.connection.wait_headers()
    assert await rig.connection.read_all() == b"data: a\n\ndata: b\n\n"
    rig.connection.finished()
    assert rig.connection.reusable
    assert not rig.transport.aborted
    assert rig.lost == []


async def test_an_answer_that_says_close_is_whole_but_not_reused(rig: Rig) -> None:
    rig.send()
    rig.feed(response(b"ok", headers={"connection": "close"}))
    await rig.connection.wait_headers()
    assert await rig.connection.read_all() == b"ok"
    rig.connection.finished()
    assert phase(rig) is Phase.IDLE
    assert not rig.connection.reusable
    rig.connection.connection_lost(None)
    assert phase(rig) is Phase.CLOSED
    assert rig.lost == [rig.connection]


async def test_an_answer_without_length_or_chunks_ends_with_the_connection(rig: Rig) -> None:
    rig.send()
    rig.feed(CLOSE_DELIMITED + b"all of ", 5)
    await rig.connection.wait_headers()
    rig.feed(b"it")
    rig.connection.connection_lost(None)
    assert phase(rig) is Phase.CLOSED
    assert await rig.connection.read_all() == b"all of it"
    rig.connection.finished()
    assert not rig.connection.reusable


async def test_a_drop_before_the_head_is_an_unanswered_drop(rig: Rig) -> None:
    rig.send()
    rig.feed(b"HTTP/1.1 200 OK\r\ncontent-len")
    rig.connection.connection_lost(ConnectionResetError())
    with pytest.raises(ConnectionDropped) as dropped:
        await rig.connection.wait_headers()
    assert not dropped.value.answered  # the pool may send the request again
    assert phase(rig) is Phase.FAILED
    assert rig.lost == [rig.connection]


async def test_a_drop_after_the_head_fails_the_body_as_answered(rig: Rig) -> None:
    rig.send()
    rig.feed(b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nhalf")
    await rig.connection.wait_headers()
    rig.connection.connection_lost(None)
    with pytest.raises(ConnectionDropped) as dropped:
        await rig.connection.read_all()
    assert dropped.value.answered
    assert phase(rig) is Phase.FAILED


async def test_silence_before_the_head_times_out(rig: Rig) -> None:
    rig.send(read_timeout=5, total=60)
    rig.loop.advance(4.9)
    assert phase(rig) is Phase.SENT
    rig.loop.advance(0.2)
    with pytest.raises(ReadTimeout, match="no data for 5 s") as raised:
        await rig.connection.wait_headers()
    assert not raised.value.answered
    assert rig.transport.aborted
    assert phase(rig) is Phase.FAILED


async def test_a_stream_past_its_deadline_times_out_though_bytes_keep_coming(rig: Rig) -> None:
    rig.send(read_timeout=5, total=12)
    rig.feed(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n")
    await rig.connection.wait_headers()
    for _ in range(3):
        rig.loop.advance(4)
        rig.feed(b"2\r\nhi\r\n")
    assert await rig.connection.read_chunk() == b"hihihi"
    with pytest.raises(ReadTimeout, match="total") as raised:
        await rig.connection.read_chunk()  # the deadline's timer fired with the third read
    assert raised.value.answered
    assert phase(rig) is Phase.FAILED


async def test_a_timeout_does_not_fire_once_the_answer_is_whole(rig: Rig) -> None:
    rig.send(read_timeout=5, total=60)
    rig.feed(response(b"ok"))
    rig.loop.advance(100)
    assert phase(rig) is Phase.COMPLETE
    assert not rig.transport.aborted
    assert await rig.connection.read_all() == b"ok"


@pytest.mark.parametrize(
    ("upstream", "message"),
    [
        (b"HTTP/1.1 200 OK\r\ncontent-length: x\r\n\r\n", "invalid HTTP answer"),
        (b"SMTP ready\r\n", "invalid HTTP answer"),
        (
            b"HTTP/1.1 101 Switching Protocols\r\nupgrade: h2c\r\nconnection: upgrade\r\n\r\n",
            "switched",
        ),
    ],
)
async def test_bytes_that_are_not_http_fail_the_answer(
    rig: Rig, upstream: bytes, message: str
) -> None:
    rig.send()
    rig.feed(upstream)
    with pytest.raises(ProtocolViolation, match=message):
        await rig.connection.wait_headers()
    assert phase(rig) is Phase.FAILED
    assert rig.transport.aborted


async def test_an_answer_larger_than_allowed_fails_as_answered() -> None:
    rig = Rig(max_answer=300 * 1024)
    rig.send()
    body = b"x" * (400 * 1024)
    rig.feed(response(body), 64 * 1024)
    await rig.connection.wait_headers()
    with pytest.raises(AnswerTooLarge) as raised:
        await rig.connection.read_all()
    assert raised.value.answered
    assert rig.transport.aborted


async def test_aborting_mid_answer_fails_it_and_cancels_the_pipe(rig: Rig) -> None:
    rig.send()
    rig.feed(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n2\r\nhi\r\n")
    await rig.connection.wait_headers()
    sink = Sink()
    piped = rig.connection.pipe(Echo(), sink)
    assert sink.data == [b"hi"]
    rig.connection.abort()
    assert piped.cancelled()
    assert rig.transport.aborted
    assert phase(rig) is Phase.FAILED
    assert not rig.connection.reusable
    assert isinstance(rig.connection.error, TransportError)
    assert rig.connection.error.answered
    rig.feed(b"2\r\nho\r\n")  # what was in flight is ignored
    assert sink.data == [b"hi"]


async def test_aborting_an_idle_connection_closes_it(rig: Rig) -> None:
    rig.connection.abort()
    assert phase(rig) is Phase.CLOSED
    assert rig.transport.aborted
    assert rig.connection.error is None


async def test_bytes_on_an_idle_connection_close_it(rig: Rig) -> None:
    rig.send()
    rig.feed(response(b"ok"))
    assert await rig.connection.read_all() == b"ok"
    rig.connection.finished()
    rig.feed(response(b"unasked"))
    assert phase(rig) is Phase.FAILED
    assert rig.connection.closed
    assert rig.transport.aborted
    assert not rig.connection.reusable


async def test_bytes_after_a_whole_answer_close_the_connection_but_the_answer_stands(
    rig: Rig,
) -> None:
    rig.send()
    rig.feed(response(b"ok") + b"HTTP/1.1 200 OK\r\n")
    assert phase(rig) is Phase.CLOSED
    assert rig.transport.aborted
    assert await rig.connection.read_all() == b"ok"


async def test_a_piped_stream_reaches_its_channel_read_by_read_then_ends(rig: Rig) -> None:
    rig.send()
    rig.feed(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n")
    await rig.connection.wait_headers()
    sink = Sink()
    piped = rig.connection.pipe(Echo(), sink)
    rig.feed(b"3\r\none\r\n")
    rig.feed(b"3\r\ntwo\r\n0\r\n\r\n")
    assert piped.done()  # inside the socket's callback
    await piped
    assert (sink.data, sink.ended) == ([b"one", b"two"], True)
    rig.connection.finished()
    assert rig.connection.reusable


async def test_a_translator_that_raises_fails_the_answer_and_closes_the_connection(
    rig: Rig,
) -> None:
    rig.send()
    rig.feed(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n")
    await rig.connection.wait_headers()
    piped = rig.connection.pipe(Echo(fail=True), Sink())
    rig.feed(b"3\r\none\r\n")
    assert piped.done()
    with pytest.raises(ValueError, match="the client left"):
        await piped
    assert phase(rig) is Phase.FAILED
    assert rig.transport.aborted


async def test_a_slow_reader_pauses_the_socket_and_reading_resumes_it(rig: Rig) -> None:
    rig.send()
    rig.feed(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n")
    await rig.connection.wait_headers()
    rig.feed(b"2\r\nhi\r\n")
    assert await rig.connection.read_chunk() == b"hi"  # from now on the body is read as it comes
    big = b"x" * (300 * 1024)
    rig.feed(b"%x\r\n%s\r\n" % (len(big), big))
    assert not rig.transport.reading
    assert rig.connection.socket_paused
    assert await rig.connection.read_chunk() == big
    assert rig.transport.reading
    assert not rig.connection.socket_paused
    rig.connection.pause_reading()
    assert not rig.transport.reading
    rig.connection.resume_reading()
    assert rig.transport.reading


async def test_a_second_request_while_one_is_in_flight_is_refused(rig: Rig) -> None:
    rig.send()
    with pytest.raises(IllegalTransition, match="SENT -> SENT"):
        rig.send()
    rig.connection.connection_lost(None)
    with pytest.raises(IllegalTransition, match="FAILED -> SENT"):
        rig.send()


async def test_a_piped_stream_followed_by_unasked_bytes_still_ends_whole(rig: Rig) -> None:
    rig.send()
    rig.feed(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n")
    await rig.connection.wait_headers()
    sink = Sink()
    piped = rig.connection.pipe(Echo(), sink)
    rig.feed(b"3\r\none\r\n0\r\n\r\nHTTP/1.1 200 OK\r\n")
    assert piped.done()  # inside the socket's callback
    await piped
    assert (sink.data, sink.ended) == ([b"one"], True)
    assert phase(rig) is Phase.CLOSED
    assert rig.transport.aborted
