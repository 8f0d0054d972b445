"""The response head's byte tables refuse exactly what uvicorn's regular expressions refuse, and a
head the app builds wrongly is refused as uvicorn refuses it."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest
from uvicorn.protocols.http import httptools_impl

from messagegate.server.head_cycle import HEAD_LINES, NAME_REFUSED, VALUE_REFUSED, HeadCycle


def test_the_refused_bytes_are_uvicorns() -> None:
    every = [bytes([b]) for b in range(256)]
    assert {b for b in every if httptools_impl.HEADER_RE.search(b)} == {
        bytes([b]) for b in NAME_REFUSED
    }
    assert {b for b in every if httptools_impl.HEADER_VALUE_RE.search(b)} == {
        bytes([b]) for b in VALUE_REFUSED
    }


class _Transport:
    def __init__(self) -> None:
        self.written: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.written.append(data)


class _Flow:
    write_paused = False


def _cycle(transport: _Transport, keep_alive: bool = True, access_log: bool = False) -> HeadCycle:
    return HeadCycle(
        scope={  # type: ignore[typeddict-item]
            "method": "POST",
            "http_version": "1.1",
            # What uvicorn's access log line reads.
            "client": ("127.0.0.1", 50000),
            "raw_path": b"/v1/messages",
            "query_string": b"",
        },
        transport=transport,  # type: ignore[arg-type]
        flow=_Flow(),  # type: ignore[arg-type]
        logger=None,  # type: ignore[arg-type]
        access_logger=logging.getLogger("test.access"),
        access_log=access_log,
        default_headers=[(b"server", b"uvicorn")],
        message_event=asyncio.Event(),
        expect_100_continue=False,
        keep_alive=keep_alive,
        on_response=lambda: None,
    )


def _start(headers: list[tuple[bytes, bytes]]) -> Any:
    return {"type": "http.response.start", "status": 200, "headers": headers}


@pytest.mark.parametrize(
    "headers",
    [
        [(b"content-type", b"application/json"), (b"content-length", b"12")],
        [(b"X-Mixed-Case", b"v\tw"), (b"transfer-encoding", b"Chunked")],
        [(b"connection", b"Keep-Alive, close"), (b"content-length", b"0")],
        [(b"anthropic-ratelimit-tokens-reset", b"2026-12-03T11:40:00Z")],
        [(b"Content-Length", b"3"), (b"content-length", b"5")],
        [(b"content-length", b"3"), (b"Transfer-Encoding", b"chunked")],
        [(b"transfer-encoding", b"gzip"), (b"content-length", b"7")],
        [(b"Connection", b"keep-alive"), (b"x-a", b"")],
        [],
    ],
)
@pytest.mark.parametrize("keep_alive", [True, False])
async def test_a_head_is_written_as_uvicorn_writes_it(
    headers: list[tuple[bytes, bytes]], keep_alive: bool
) -> None:
    transport = _Transport()
    cycle = _cycle(transport, keep_alive)
    await cycle.send(_start(headers))
    uvicorns = _Transport()
    theirs = _cycle(uvicorns, keep_alive)
    await httptools_impl.RequestResponseCycle.send(theirs, _start(headers))
    assert b"".join(transport.written) == b"".join(uvicorns.written)
    assert transport.written[0].startswith(b"HTTP/1.1 200 OK\r\nserver: uvicorn\r\n")
    # The framing and the connection's fate are uvicorn's too.
    for state in ("expected_content_length", "chunked_encoding", "keep_alive"):
        assert getattr(cycle, state) == getattr(theirs, state), state


@pytest.mark.parametrize(
    ("header", "error"),
    [
        ((b"bad name", b"v"), "Invalid HTTP header name."),
        ((b"x-split", b"a\r\nx-injected: 1"), "Invalid HTTP header value."),
        ((b"x-nul", b"a\x00"), "Invalid HTTP header value."),
    ],
)
async def test_a_forbidden_byte_is_refused_as_uvicorn_refuses_it(
    header: tuple[bytes, bytes], error: str
) -> None:
    transport = _Transport()
    with pytest.raises(RuntimeError, match=error):
        await _cycle(transport).send(_start([header]))
    assert transport.written == []


LIMIT_LINES = (
    b"anthropic-ratelimit-requests-limit: 2\r\n"
    b"anthropic-ratelimit-requests-remaining: 1\r\n"
    b"anthropic-ratelimit-requests-reset: 2026-12-03T11:40:00Z\r\n"
)
LIMIT_PAIRS = [
    (b"anthropic-ratelimit-requests-limit", b"2"),
    (b"anthropic-ratelimit-requests-remaining", b"1"),
    (b"anthropic-ratelimit-requests-reset", b"2026-12-03T11:40:00Z"),
]


@pytest.mark.parametrize("access_log", [False, True], ids=["head-cycle", "uvicorn-head"])
@pytest.mark.parametrize("keep_alive", [True, False])
async def test_head_lines_are_written_as_uvicorn_writes_them_as_headers(
    access_log: bool, keep_alive: bool
) -> None:
    """With an access log, uvicorn writes the head: the lines reach it as headers."""
    headers = [(b"content-type", b"application/json"), (b"content-length", b"12")]
    transport = _Transport()
    start = _start(list(headers))
    start[HEAD_LINES] = LIMIT_LINES
    await _cycle(transport, keep_alive, access_log).send(start)
    uvicorns = _Transport()
    await httptools_impl.RequestResponseCycle.send(
        _cycle(uvicorns, keep_alive), _start([*headers, *LIMIT_PAIRS])
    )
    assert b"".join(transport.written) == b"".join(uvicorns.written)
    assert LIMIT_LINES in b"".join(transport.written)
