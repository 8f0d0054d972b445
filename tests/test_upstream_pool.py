"""The upstream connection pool on real loopback sockets: framing, reuse, failures, TLS."""

from __future__ import annotations

import asyncio
import functools
import gzip
import ssl

import pytest
import trustme

from fakes.clock import FakeClock
from fakes.raw_http import Answer, RawHTTPServer, Seen, chunked, response
from messagegate.config import Provider, Timeouts
from messagegate.errors import UpstreamProtocolError, UpstreamTimeout, UpstreamUnreachable
from messagegate.providers.connection import ConnectionDropped, ProtocolViolation, ReadTimeout
from messagegate.providers.http import upstream_errors
from messagegate.providers.pool import ConnectionPool, Endpoint, RequestHead, UpstreamResponse

QUICK = Timeouts(connect=5, first_byte=5, idle=5, total=10)


def head(server: RawHTTPServer, scheme: str = "http") -> RequestHead:
    endpoint = Endpoint.parse(f"{scheme}://127.0.0.1:{server.port}/v1/chat/completions")
    return RequestHead(
        endpoint, {"authorization": "Bearer sk-up", "content-type": "application/json"}
    )


async def post(
    pool: ConnectionPool, request_head: RequestHead, body: bytes = b"{}", timeouts: Timeouts = QUICK
) -> UpstreamResponse:
    return await pool.post(request_head, request_head.encode(body, {"x-extra": "1"}), timeouts)


async def read_chunks(answer: UpstreamResponse) -> list[bytes]:
    parts: list[bytes] = []
    for _ in range(1000):
        part = await answer.read_chunk()
        if not part:
            answer.release()
            return parts
        parts.append(part)
    raise AssertionError("the body never ended")


async def test_answers_are_read_whole_and_the_connection_is_reused() -> None:
    def script(connection: int, number: int, seen: Seen) -> Answer:
        return Answer(response(b'{"n":%d}' % number, headers={"x-ratelimit-remaining": "9"}))

    async with RawHTTPServer(script) as server:
        pool = ConnectionPool()
        first = await post(pool, head(server), b'{"hello":"world"}')
        assert (first.status, await first.read()) == (200, b'{"n":0}')
        second = await post(pool, head(server))
        assert await second.read() == b'{"n":1}'
        pool.close()
    assert server.connections == 1
    assert second.headers["x-ratelimit-remaining"] == "9"
    seen = server.seen[0]
    assert seen.body == b'{"hello":"world"}'
    assert seen.headers["host"] == f"127.0.0.1:{server.port}"
    assert seen.headers["authorization"] == "Bearer sk-up"
    assert seen.headers["x-extra"] == "1"
    assert seen.headers["accept-encoding"] == "identity"
    assert seen.headers["content-length"] == "17"


async def test_a_chunked_answer_arrives_part_by_part() -> None:
    parts = [b"data: one\n\n", b"data: two\n\n", b"data: three\n\n"]
    whole = chunked(*parts)
    first_part_end = whole.index(b"data: two") - len(b"b\r\n")

    def script(connection: int, number: int, seen: Seen) -> Answer:
        # The rest comes later, so the reader sees the first part before the others exist.
        return Answer(whole[:first_part_end], later=[(0.05, whole[first_part_end:])])

    async with RawHTTPServer(script) as server:
        pool = ConnectionPool()
        answer = await post(pool, head(server))
        received = await read_chunks(answer)
        again = await post(pool, head(server))
        assert b"".join(await read_chunks(again)) == b"".join(parts)
        pool.close()
    assert received[0] == parts[0]
    assert b"".join(received) == b"".join(parts)
    assert server.connections == 1


async def test_the_pool_is_told_each_time_a_socket_callback_wakes_a_reader() -> None:
    whole = chunked(b"data: one\n\n", b"data: two\n\n")
    first_part_end = whole.index(b"data: two") - len(b"b\r\n")

    def script(connection: int, number: int, seen: Seen) -> Answer:
        return Answer(whole[:first_part_end], later=[(0.05, whole[first_part_end:])])

    # Whether each wake-up came from a socket callback (no task running), as the server's
    # flush-after-the-woken-task needs.
    wakes: list[bool] = []

    class Echo:
        def feed(self, chunk: bytes) -> bytes:
            return chunk

        def end(self) -> bytes:
            return b""

    class Sink:
        def __init__(self) -> None:
            self.body: list[bytes] = []

        def write(self, data: bytes) -> None:
            self.body.append(data)

        def end(self, last: bytes) -> None:
            self.body.append(last)

    async with RawHTTPServer(script) as server:
        pool = ConnectionPool(on_wake=lambda: wakes.append(asyncio.current_task() is None))
        answer = await post(pool, head(server))
        assert wakes == [True]  # the head woke the request's task
        sink = Sink()
        await answer.pipe(Echo(), sink)
        answer.release()
        pool.close()
    assert wakes == [True, True]  # and the piped body's end woke it again
    assert b"".join(sink.body) == b"data: one\n\ndata: two\n\n"


async def test_the_pool_is_told_when_a_failure_wakes_a_reader() -> None:
    wakes: list[bool] = []
    async with RawHTTPServer(lambda *_: Answer(close=True)) as server:
        pool = ConnectionPool(on_wake=lambda: wakes.append(asyncio.current_task() is None))
        with pytest.raises(ConnectionDropped):
            await post(pool, head(server))
        pool.close()
    # The connection's loss woke the request's task with the error, from a socket callback.
    assert wakes == [True]


async def test_interim_answers_are_skipped_for_the_final_one() -> None:
    early_hints = b"HTTP/1.1 103 Early Hints\r\nlink: </x>; rel=preload\r\n\r\n"

    def script(connection: int, number: int, seen: Seen) -> Answer:
        return Answer(early_hints + response(b'{"final":true}', headers={"x-final": "1"}))

    async with RawHTTPServer(script) as server:
        pool = ConnectionPool()
        answer = await post(pool, head(server))
        assert (answer.status, await answer.read()) == (200, b'{"final":true}')
        assert "link" not in answer.headers
        assert answer.headers["x-final"] == "1"
        pool.close()


async def test_a_gzip_answer_is_decompressed_though_identity_was_asked_for() -> None:
    body = b'{"text":"' + b"compressible " * 500 + b'"}'
    packed = gzip.compress(body)

    def script(connection: int, number: int, seen: Seen) -> Answer:
        return Answer(response(packed, headers={"content-encoding": "gzip"}))

    async with RawHTTPServer(script) as server:
        pool = ConnectionPool()
        answer = await post(pool, head(server))
        assert await answer.read() == body
        pool.close()


@pytest.mark.parametrize(
    "answer",
    [
        b"NOT HTTP AT ALL\r\n\r\n",
        response(b"\x1f\x8b this is not gzip", headers={"content-encoding": "gzip"}),
    ],
    ids=["garbage", "broken-gzip"],
)
async def test_an_answer_that_is_not_valid_http_is_a_protocol_violation(answer: bytes) -> None:
    async with RawHTTPServer(lambda *_: Answer(answer)) as server:
        pool = ConnectionPool()
        with pytest.raises(ProtocolViolation):
            await (await post(pool, head(server))).read()
        pool.close()


async def test_a_close_delimited_answer_ends_with_the_connection() -> None:
    def script(connection: int, number: int, seen: Seen) -> Answer:
        return Answer(b"HTTP/1.1 200 OK\r\nconnection: close\r\n\r\npart one, part two", close=True)

    async with RawHTTPServer(script) as server:
        pool = ConnectionPool()
        assert await (await post(pool, head(server))).read() == b"part one, part two"
        assert await (await post(pool, head(server))).read() == b"part one, part two"
        pool.close()
    assert server.connections == 2


async def test_a_request_sent_as_the_server_closes_an_idle_connection_is_sent_again() -> None:
    def script(connection: int, number: int, seen: Seen) -> Answer:
        if connection == 0 and number == 1:
            return Answer(close=True)  # closed without a byte of answer
        return Answer(response(b"%d/%d" % (connection, number)))

    async with RawHTTPServer(script) as server:
        pool = ConnectionPool()
        assert await (await post(pool, head(server))).read() == b"0/0"
        assert await (await post(pool, head(server))).read() == b"1/0"
        pool.close()
    assert [s.connection for s in server.seen] == [0, 0, 1]


async def test_work_given_to_post_runs_once_per_request_though_it_is_sent_again() -> None:
    def script(connection: int, number: int, seen: Seen) -> Answer:
        if connection == 0 and number == 1:
            return Answer(close=True)  # closed without a byte of answer
        return Answer(response(b"%d/%d" % (connection, number)))

    runs: list[int] = []
    async with RawHTTPServer(script) as server:
        pool = ConnectionPool()
        request_head = head(server)
        for number in range(2):
            request = request_head.encode(b"{}")
            answer = await pool.post(
                request_head, request, QUICK, functools.partial(runs.append, number)
            )
            await answer.read()
        pool.close()
    assert [s.connection for s in server.seen] == [0, 0, 1]  # the second request went twice
    assert runs == [0, 1]


async def test_work_given_to_post_that_fails_closes_the_connection_it_waited_on() -> None:
    def script(connection: int, number: int, seen: Seen) -> Answer:
        return Answer(response(b"%d/%d" % (connection, number)))

    def failing() -> None:
        raise ValueError("counting failed")

    async with RawHTTPServer(script) as server:
        pool = ConnectionPool()
        request_head = head(server)
        with pytest.raises(ValueError, match="counting failed"):
            await pool.post(request_head, request_head.encode(b"{}"), QUICK, failing)
        await server.until(lambda: bool(server.lost))
        assert server.lost == [0]  # closed, not left open with its answer unread
        assert await (await post(pool, request_head)).read() == b"1/0"
        pool.close()


async def test_an_answer_cut_off_after_it_started_is_not_sent_again() -> None:
    def script(connection: int, number: int, seen: Seen) -> Answer:
        if number == 0:
            return Answer(response(b"ok"))
        return Answer(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\npartial", close=True)

    async with RawHTTPServer(script) as server:
        pool = ConnectionPool()
        assert await (await post(pool, head(server))).read() == b"ok"
        answer = await post(pool, head(server))
        with pytest.raises(ConnectionDropped):
            await answer.read()
        pool.close()
    assert len(server.seen) == 2


async def test_a_fresh_connection_closed_without_an_answer_fails() -> None:
    async with RawHTTPServer(lambda *_: Answer(close=True)) as server:
        pool = ConnectionPool()
        with pytest.raises(ConnectionDropped):
            await post(pool, head(server))
        pool.close()
    assert len(server.seen) == 1


async def test_an_idle_connection_the_server_closed_is_not_reused() -> None:
    async with RawHTTPServer(lambda *_: Answer(response(b"ok"), close=True)) as server:
        pool = ConnectionPool()
        for _ in range(3):
            assert await (await post(pool, head(server))).read() == b"ok"
        pool.close()
    assert server.connections == 3


async def test_idle_connections_past_the_keepalive_are_closed_not_reused() -> None:
    async with RawHTTPServer(lambda *_: Answer(response(b"ok"))) as server:
        clock = FakeClock()
        pool = ConnectionPool(keepalive=0.0, clock=clock)
        for _ in range(2):
            assert await (await post(pool, head(server))).read() == b"ok"
            clock.advance(0.01)
        pool.close()
    assert server.connections == 2


async def test_a_bursts_idle_connections_close_once_past_the_keepalive() -> None:
    async with RawHTTPServer(lambda *_: Answer(response(b"ok"))) as server:
        clock = FakeClock()
        pool = ConnectionPool(keepalive=0.2, clock=clock)
        burst = await asyncio.gather(*(post(pool, head(server)) for _ in range(3)))
        for answer in burst:
            await answer.read()
        assert pool.idle_count() == 3
        # One request at a time keeps reusing the newest; the two below it age out.
        for _ in range(2):
            clock.advance(0.12)
            assert await (await post(pool, head(server))).read() == b"ok"
        assert pool.idle_count() == 1
        pool.close()


async def test_bytes_on_an_idle_connection_close_it() -> None:
    def script(connection: int, number: int, seen: Seen) -> Answer:
        if connection == 0:
            return Answer(response(b"ok"), later=[(0.01, response(b"unasked"))])
        return Answer(response(b"fresh"))

    async with RawHTTPServer(script) as server:
        pool = ConnectionPool()
        assert await (await post(pool, head(server))).read() == b"ok"
        # The pool closes the connection the unasked bytes came on: the server sees it go.
        await server.until(lambda: bool(server.lost))
        assert await (await post(pool, head(server))).read() == b"fresh"
        pool.close()
    assert server.connections == 2


async def test_a_silent_upstream_times_out_and_its_connection_is_not_reused() -> None:
    def script(connection: int, number: int, seen: Seen) -> Answer:
        return Answer() if connection == 0 else Answer(response(b"ok"))

    async with RawHTTPServer(script) as server:
        pool = ConnectionPool()
        quick = Timeouts(connect=5, first_byte=0.1, idle=5, total=10)
        with pytest.raises(ReadTimeout):
            await post(pool, head(server), timeouts=quick)
        assert await (await post(pool, head(server))).read() == b"ok"
        pool.close()
    assert server.connections == 2


async def test_a_trickling_answer_stops_at_the_total_deadline() -> None:
    trickle = [(0.05, b"data: x\n\n")] * 100

    def script(connection: int, number: int, seen: Seen) -> Answer:
        return Answer(b"HTTP/1.1 200 OK\r\n\r\n", later=trickle)

    async with RawHTTPServer(script) as server:
        pool = ConnectionPool()
        answer = await post(pool, head(server), timeouts=Timeouts(5, 1, 1, total=0.4))
        answer.set_read_timeout(1)
        with pytest.raises(ReadTimeout, match="total"):
            await read_chunks(answer)
        pool.close()


async def test_a_slow_reader_pauses_the_socket_and_still_gets_every_byte() -> None:
    parts = [bytes([65 + i % 26]) * 64 * 1024 for i in range(32)]

    async with RawHTTPServer(lambda *_: Answer(chunked(*parts))) as server:
        pool = ConnectionPool()
        answer = await post(pool, head(server))
        connection = answer._connection
        assert connection is not None
        received = [await answer.read_chunk()]
        # While nobody reads, the socket stops being read once the high-water mark is passed.
        for _ in range(200):
            if connection.socket_paused:
                break
            await asyncio.sleep(0.01)
        assert connection.socket_paused
        received += await read_chunks(answer)
        pool.close()
    assert b"".join(received) == b"".join(parts)


async def test_cancelling_a_request_closes_its_connection() -> None:
    def script(connection: int, number: int, seen: Seen) -> Answer:
        return Answer() if connection == 0 else Answer(response(b"ok"))

    async with RawHTTPServer(script) as server:
        pool = ConnectionPool()
        waiting = asyncio.create_task(post(pool, head(server)))
        await server.until(lambda: bool(server.seen))
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting
        await server.until(lambda: bool(server.lost))
        assert server.lost == [0]
        assert await (await post(pool, head(server))).read() == b"ok"
        pool.close()
    assert server.connections == 2


async def test_https_upstreams_are_verified_against_trusted_authorities() -> None:
    authority = trustme.CA()
    served = authority.issue_cert("127.0.0.1")
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    served.configure_cert(server_context)
    trusting = ssl.create_default_context()
    authority.configure_trust(trusting)

    async with RawHTTPServer(lambda *_: Answer(response(b"secret")), tls=server_context) as server:
        pool = ConnectionPool(ssl_context=trusting)
        assert await (await post(pool, head(server, "https"))).read() == b"secret"
        pool.close()
        untrusting = ConnectionPool()
        with pytest.raises(ssl.SSLCertVerificationError):
            await post(untrusting, head(server, "https"))
        untrusting.close()


def test_header_values_cannot_inject_lines() -> None:
    endpoint = Endpoint.parse("https://api.example.test/v1/messages")
    with pytest.raises(ValueError, match="line break"):
        RequestHead(endpoint, {"x-api-key": "sk\r\nx-evil: 1"})
    request_head = RequestHead(endpoint, {"x-api-key": "sk"})
    with pytest.raises(ValueError, match="line break"):
        request_head.encode(b"{}", {"anthropic-beta": "a\nb"})
    assert request_head.encode(b"{}").startswith(
        b"POST /v1/messages HTTP/1.1\r\nhost: api.example.test\r\n"
    )
    assert endpoint.with_query("beta=true").target == "/v1/messages?beta=true"


@pytest.mark.parametrize(
    ("raised", "expected"),
    [
        (ReadTimeout("no data"), UpstreamTimeout),
        (ConnectionDropped("closed"), UpstreamUnreachable),
        (ProtocolViolation("invalid HTTP answer"), UpstreamProtocolError),
        (ConnectionRefusedError(), UpstreamUnreachable),
    ],
)
def test_transport_failures_become_the_gateways_errors(
    raised: Exception, expected: type[Exception]
) -> None:
    provider = Provider(name="up", kind="openai", base_url="http://127.0.0.1:9", api_key=None)
    with pytest.raises(expected, match="'up'"), upstream_errors(provider):
        raise raised
