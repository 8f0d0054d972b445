"""The response head's byte tables refuse exactly what uvicorn's regular expressions refuse, and a
head the app builds wrongly is refused as uvicorn refuses it."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from uvicorn.protocols.http import httptools_impl

from messagegate.server.head_cycle import NAME_REFUSED, VALUE_REFUSED, HeadCycle


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


def _cycle(transport: _Transport, keep_alive: bool = True) -> HeadCycle:
    return HeadCycle(
        scope={"method": "POST", "http_version": "1.1"},  # type: ignore[typeddict-item]
        transport=transport,  # type: ignore[arg-type]
        flow=_Flow(),  # type: ignore[arg-type]
        logger=None,  # type: ignore[arg-type]
        access_logger=None,  # type: ignore[arg-type]
        access_log=False,
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
