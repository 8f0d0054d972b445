"""A fast fake LLM upstream: asyncio Protocol + httptools on uvloop, answers pre-built per profile.

Serves ``POST .../chat/completions`` (OpenAI) and ``POST .../v1/messages`` (Anthropic), streaming
or not, after a time to first token (TTFT) and with an inter-token delay (ITL). Defaults come from
the command line; a request may override them with ``x-fake-ttft-ms``, ``x-fake-tokens`` and
``x-fake-itl-ms`` headers. ``GET /__stats`` counts what this process served.

    python -m bench.fake_upstream --port 9101 --ttft-ms 50 --tokens 100 --itl-ms 5 [--processes N]
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import multiprocessing
import signal
from collections.abc import Sequence
from dataclasses import dataclass
from typing import cast

import httptools
import uvloop

from bench.replies import Dialect, completion, json_response, stream

_OVERRIDES = {b"x-fake-ttft-ms": "ttft_ms", b"x-fake-tokens": "tokens", b"x-fake-itl-ms": "itl_ms"}
_NOT_FOUND = json_response({"error": {"type": "not_found", "message": "no such endpoint"}}, 404)
_BAD_REQUEST = json_response({"error": {"type": "bad_request", "message": "bad request"}}, 400)


@dataclass(frozen=True, slots=True)
class Profile:
    """How the fake model answers: delay before the first token, tokens, delay between them."""

    ttft_ms: float = 0.0
    tokens: int = 20
    itl_ms: float = 0.0

    def override(self, headers: dict[str, str]) -> Profile:
        changes = {name: type(getattr(self, name))(float(v)) for name, v in headers.items()}
        return dataclasses.replace(self, **changes)

    @property
    def completion_delay(self) -> float:
        """A non-streaming answer arrives when the whole stream would have ended."""
        return (self.ttft_ms + max(self.tokens - 1, 0) * self.itl_ms) / 1000


@dataclass(slots=True)
class Counters:
    requests: int = 0
    streams_open: int = 0
    streams_done: int = 0

    def as_json(self) -> bytes:
        return json_response(dataclasses.asdict(self))


def json_flag(body: bytes, key: bytes) -> bool:
    """Whether ``"key": true`` is in a JSON body, found without parsing it."""
    needle = b'"' + key + b'"'
    at = body.find(needle)
    while at >= 0:
        rest = body[at + len(needle) : at + len(needle) + 32].lstrip()
        if rest[:1] == b":":
            return rest[1:].lstrip().startswith(b"true")
        at = body.find(needle, at + 1)
    return False


def dialect_of(path: bytes) -> Dialect | None:
    if path.endswith(b"/chat/completions"):
        return "openai"
    if path.endswith(b"/v1/messages"):
        return "anthropic"
    return None


class UpstreamProtocol(asyncio.Protocol):
    """One keep-alive connection; one answer at a time (clients here never pipeline)."""

    def __init__(self, profile: Profile, counters: Counters) -> None:
        self.profile = profile
        self.counters = counters
        self.loop = asyncio.get_running_loop()
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self.url = b""
        self.body: list[bytes] = []
        self.overrides: dict[str, str] = {}
        self.timer: asyncio.TimerHandle | None = None
        self.pieces: tuple[bytes, ...] = ()
        self.next_piece = 0
        self.started = 0.0
        self.itl = 0.0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
            if self.pieces:
                self.counters.streams_open -= 1

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            self._write(_BAD_REQUEST)
            self._close()

    def on_message_begin(self) -> None:
        self.url = b""
        self.body = []
        self.overrides = {}

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        field = _OVERRIDES.get(name.lower())
        if field is not None:
            self.overrides[field] = value.decode()

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        path = self.url.partition(b"?")[0]
        dialect = dialect_of(path)
        if dialect is None:
            self._write(self.counters.as_json() if path == b"/__stats" else _NOT_FOUND)
            return
        self.counters.requests += 1
        profile = self.profile.override(self.overrides) if self.overrides else self.profile
        body = b"".join(self.body)
        if json_flag(body, b"stream"):
            self._start_stream(dialect, profile, json_flag(body, b"include_usage"))
        else:
            self._later(profile.completion_delay, completion(dialect, max(profile.tokens, 1)))

    def _later(self, delay: float, data: bytes) -> None:
        if delay <= 0:
            self._write(data)
        else:
            self.timer = self.loop.call_later(delay, self._write_later, data)

    def _write_later(self, data: bytes) -> None:
        self.timer = None
        self._write(data)

    def _start_stream(self, dialect: Dialect, profile: Profile, include_usage: bool) -> None:
        reply = stream(dialect, max(profile.tokens, 1), include_usage)
        self.counters.streams_open += 1
        # No inter-token delay: the whole stream in one write, the cheapest the upstream can be.
        self.pieces = (reply.whole,) if profile.itl_ms <= 0 else reply.pieces
        self.next_piece = 0
        self.itl = profile.itl_ms / 1000
        self.started = self.loop.time() + profile.ttft_ms / 1000
        if profile.ttft_ms <= 0:
            self._send_piece()
        else:
            self.timer = self.loop.call_at(self.started, self._send_piece)

    def _send_piece(self) -> None:
        self.timer = None
        if self.transport is None:
            return
        self._write(self.pieces[self.next_piece])
        self.next_piece += 1
        if self.next_piece < len(self.pieces):
            when = self.started + self.next_piece * self.itl
            self.timer = self.loop.call_at(when, self._send_piece)
        else:
            self.pieces = ()
            self.counters.streams_open -= 1
            self.counters.streams_done += 1

    def _write(self, data: bytes) -> None:
        if self.transport is not None:
            self.transport.write(data)
            if not self.parser.should_keep_alive():
                self._close()

    def _close(self) -> None:
        if self.transport is not None:
            self.transport.close()


async def serve(host: str, port: int, profile: Profile, reuse_port: bool) -> None:
    """Serve until SIGTERM or SIGINT."""
    loop = asyncio.get_running_loop()
    counters = Counters()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    server = await loop.create_server(
        lambda: UpstreamProtocol(profile, counters), host, port, reuse_port=reuse_port, backlog=4096
    )
    async with server:
        await stop.wait()


def run_server(host: str, port: int, profile: Profile, reuse_port: bool) -> None:
    uvloop.run(serve(host, port, profile, reuse_port))


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench.fake_upstream", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9101)
    parser.add_argument("--ttft-ms", type=float, default=0.0, help="time to first token")
    parser.add_argument("--tokens", type=int, default=20, help="output tokens per answer")
    parser.add_argument("--itl-ms", type=float, default=0.0, help="delay between tokens")
    parser.add_argument("--processes", type=int, default=1, help="processes sharing the port")
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    args = _parser().parse_args(argv)
    profile = Profile(args.ttft_ms, args.tokens, args.itl_ms)
    reuse = args.processes > 1
    spawn = multiprocessing.get_context("spawn")
    # Daemonic helpers end with this process; every one holds its own SO_REUSEPORT socket.
    helpers = [
        spawn.Process(target=run_server, args=(args.host, args.port, profile, True), daemon=True)
        for _ in range(args.processes - 1)
    ]
    for helper in helpers:
        helper.start()
    run_server(args.host, args.port, profile, reuse)


if __name__ == "__main__":
    main()
