"""Privacy mode under test: a key file, the local proxy under uvicorn, a TCP tap that records
the bytes between proxy and gateway, and attestation verifiers that accept or refuse."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fakes.gateway import running_server
from messagegate.cli import proxy_serving
from messagegate.privacy.keys import rotate
from messagegate.privacy.proxy import ProxyApp
from messagegate.privacy.trust import KeyTrust
from messagegate.server.http_protocol import HttpProtocol


def make_key_file(directory: Path, age: float = 0.0) -> tuple[Path, str]:
    """A key file with one key, made `age` seconds ago."""
    path = directory / "privacy-keys.json"
    key = rotate(path, 86400.0, time.time() - age)
    return path, key.key_id


class AcceptingVerifier:
    def __init__(self) -> None:
        self.seen: list[tuple[bytes | None, bytes]] = []

    def verify(self, evidence: bytes | None, public_key: bytes) -> bool:
        self.seen.append((evidence, public_key))
        return evidence == b"trusted-quote"


class RefusingVerifier:
    def verify(self, evidence: bytes | None, public_key: bytes) -> bool:
        return False


@asynccontextmanager
async def running_proxy(
    gateway_url: str,
    trust: KeyTrust,
    api_key: str | None,
    clock: Callable[[], float] = time.monotonic,
) -> AsyncIterator[tuple[str, ProxyApp]]:
    # Served as `messagegate proxy` serves it (cli.proxy_serving): the gateway's protocol.
    on_wake = proxy_serving().on_wake
    app = ProxyApp(gateway_url, trust, api_key, clock=clock, on_wake=on_wake)
    options: dict[str, Any] = {"http": HttpProtocol, "proxy_headers": False}
    async with running_server(app, log_level="critical", access_log=False, **options) as url:
        yield url, app


class Tap:
    """A TCP relay that records every byte each way (what a network observer would see)."""

    def __init__(self, target_port: int, rewrite: Callable[[bytes], bytes] | None = None) -> None:
        self.target_port = target_port
        # Applied to each read of the answers (an attacker on the path).
        self.rewrite = rewrite
        self.upstream = bytearray()
        self.downstream = bytearray()
        self.server: asyncio.Server | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def seen(self) -> bytes:
        return bytes(self.upstream) + bytes(self.downstream)

    async def __aenter__(self) -> Tap:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: Any) -> None:
        assert self.server is not None
        self.server.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        await asyncio.gather(
            _copy(reader, up_writer, self.upstream, None),
            _copy(up_reader, writer, self.downstream, self.rewrite),
        )


async def _copy(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    record: bytearray,
    rewrite: Callable[[bytes], bytes] | None,
) -> None:
    try:
        while data := await reader.read(65536):
            record += data
            writer.write(rewrite(data) if rewrite is not None else data)
            await writer.drain()
    except ConnectionError:
        pass
    finally:
        writer.close()
