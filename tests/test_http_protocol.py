"""The served protocol's transport: a response head leaves in one write with its body's start."""

from __future__ import annotations

import asyncio
from typing import Any

from messagegate.server.http_protocol import HeadHoldingTransport

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
        return self.closed


def holding() -> tuple[HeadHoldingTransport, RecordingTransport]:
    inner = RecordingTransport()
    transport: Any = inner
    return HeadHoldingTransport(transport, asyncio.get_running_loop()), inner


async def test_a_head_and_the_body_after_it_leave_in_one_write() -> None:
    transport, inner = holding()
    transport.write(HEAD)
    assert inner.writes == []
    assert transport.get_write_buffer_size() == len(HEAD)
    transport.write(b'{"ok":true}')
    transport.write(b"more")
    assert inner.writes == [HEAD + b'{"ok":true}', b"more"]


async def test_a_head_alone_is_written_at_the_end_of_the_loop_turn() -> None:
    transport, inner = holding()
    transport.write(HEAD)
    await asyncio.sleep(0)
    assert inner.writes == [HEAD]
    transport.write(b"body")
    assert inner.writes == [HEAD, b"body"]


async def test_closing_writes_a_held_head_first_and_aborting_drops_it() -> None:
    transport, inner = holding()
    transport.write(HEAD)
    transport.close()
    assert (inner.writes, inner.closed) == ([HEAD], True)
    assert transport.is_closing()

    transport, inner = holding()
    transport.write(HEAD)
    transport.abort()
    await asyncio.sleep(0)
    assert (inner.writes, inner.aborted) == ([], True)


async def test_a_body_that_looks_like_a_head_keeps_its_order() -> None:
    transport, inner = holding()
    transport.write(b"chunk one")
    transport.write(b"HTTP/1.1 is how this body starts")
    transport.write(b"chunk three")
    await asyncio.sleep(0)
    assert b"".join(inner.writes) == (
        b"chunk one" + b"HTTP/1.1 is how this body starts" + b"chunk three"
    )
