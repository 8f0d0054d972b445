"""A loopback OTLP/HTTP endpoint for the benches: answers every POST 200, counts the requests
and their bytes, and writes the counts when stopped (SIGTERM) as its last line, which
`answered` reads back: a bench whose exports all failed measured no exporting.

python -m bench.otlp_sink --port 4318
"""

from __future__ import annotations

import argparse
import asyncio
import re
import signal
from collections.abc import Sequence
from pathlib import Path
from typing import cast

import httptools
import uvloop

_COUNTS = re.compile(r"^answered (\d+) requests, (\d+) body bytes$", re.MULTILINE)
_OK = b"HTTP/1.1 200 OK\r\ncontent-type: application/x-protobuf\r\ncontent-length: 0\r\n\r\n"


class _Counts:
    requests = 0
    body_bytes = 0


class _Sink(asyncio.Protocol):
    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpRequestParser(self)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's TCP transport is not an asyncio.Transport subclass (an isinstance check
        # refused every connection, and every export failed).
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            if self.transport is not None:
                self.transport.close()

    def on_body(self, body: bytes) -> None:
        _Counts.body_bytes += len(body)

    def on_message_complete(self) -> None:
        _Counts.requests += 1
        if self.transport is not None:
            self.transport.write(_OK)


async def serve(host: str, port: int) -> None:
    loop = asyncio.get_running_loop()
    stopped = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stopped.set)
    server = await loop.create_server(_Sink, host, port)
    async with server:
        await stopped.wait()
    print(f"answered {_Counts.requests} requests, {_Counts.body_bytes} body bytes", flush=True)


def answered(log: Path) -> tuple[int, int]:
    """(requests, body bytes) a stopped sink answered, from its log's last line."""
    counts = _COUNTS.findall(log.read_text(errors="replace"))
    if not counts:
        raise RuntimeError(f"the OTLP sink wrote no counts in {log}")
    requests, body_bytes = counts[-1]
    return int(requests), int(body_bytes)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.otlp_sink", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=4318)
    args = parser.parse_args(argv)
    uvloop.run(serve(args.host, args.port))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
