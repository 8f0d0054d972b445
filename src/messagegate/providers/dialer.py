"""How a connection to one provider is made: name resolution (cached), both address families
raced (happy eyeballs, RFC 8305), an HTTP proxy (CONNECT tunnel for https), and the TLS context."""

from __future__ import annotations

import asyncio
import base64
import socket
import ssl
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar
from urllib.parse import unquote, urlsplit

import aiohappyeyeballs

from messagegate.config import Provider, TlsSettings

# getaddrinfo does not say how long an answer may be kept: keep it this long at most.
DNS_CACHE_SECONDS = 30.0
# RFC 8305's recommended wait before the next address family's attempt starts.
HAPPY_EYEBALLS_DELAY = 0.25
# A proxy's answer to CONNECT is a status line and a few headers.
_MAX_PROXY_ANSWER = 16 * 1024

AddrInfo = tuple[int, int, int, str, tuple[object, ...]]
P = TypeVar("P", bound=asyncio.BaseProtocol)


class ProxyRefused(OSError):
    """The proxy did not open a tunnel; the message says what it answered."""


@dataclass(frozen=True, slots=True)
class Proxy:
    """An http:// proxy; `authorization` is the Proxy-Authorization value for its credentials."""

    host: str
    port: int
    authorization: str | None = None

    @classmethod
    def parse(cls, url: str) -> Proxy:
        parts = urlsplit(url)
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError(f"expected an http:// proxy URL, got scheme {parts.scheme!r}")
        authorization = None
        if parts.username is not None:
            pair = f"{unquote(parts.username)}:{unquote(parts.password or '')}"
            authorization = "Basic " + base64.b64encode(pair.encode()).decode()
        return cls(parts.hostname, parts.port or 80, authorization)


class Resolver:
    """getaddrinfo on the loop's executor, its answers kept for DNS_CACHE_SECONDS.

    Only configured hosts (providers and proxies) are ever resolved, so the cache stays small.
    """

    def __init__(
        self,
        clock: Callable[[], float] | None = None,
        lookup: Callable[[str, int], Awaitable[Sequence[AddrInfo]]] | None = None,
    ) -> None:
        self._clock = clock
        self._lookup = lookup
        self._answers: dict[tuple[str, int], tuple[float, list[AddrInfo]]] = {}

    async def resolve(self, host: str, port: int) -> list[AddrInfo]:
        loop = asyncio.get_running_loop()
        now = (self._clock or loop.time)()
        cached = self._answers.get((host, port))
        if cached is not None and cached[0] > now:
            return cached[1]
        if self._lookup is not None:
            infos = await self._lookup(host, port)
        else:
            infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        answers: list[AddrInfo] = [
            (int(family), int(kind), proto, name, tuple(address))
            for family, kind, proto, name, address in infos
        ]
        self._answers[(host, port)] = (now + DNS_CACHE_SECONDS, answers)
        return answers


class Dialer:
    """Opens connections for one provider's endpoints."""

    def __init__(
        self,
        resolver: Resolver,
        *,
        tls: ssl.SSLContext | None = None,
        proxy: Proxy | None = None,
    ) -> None:
        self.resolver = resolver
        self._tls = tls
        self.proxy = proxy

    @classmethod
    def for_provider(cls, provider: Provider, resolver: Resolver) -> Dialer:
        tls = tls_context(provider.tls) if provider.base_url.startswith("https:") else None
        proxy = Proxy.parse(provider.proxy) if provider.proxy else None
        return cls(resolver, tls=tls, proxy=proxy)

    def forwards(self, scheme: str) -> bool:
        """Plain http through a proxy is forwarded (absolute-form request line), not tunnelled."""
        return self.proxy is not None and scheme == "http"

    def tls(self) -> ssl.SSLContext:
        if self._tls is None:
            self._tls = ssl.create_default_context()
        return self._tls

    async def connect(
        self, factory: Callable[[], P], scheme: str, host: str, port: int
    ) -> tuple[asyncio.BaseTransport, P]:
        loop = asyncio.get_running_loop()
        proxy = self.proxy
        dial_host, dial_port = (proxy.host, proxy.port) if proxy is not None else (host, port)
        sock = await aiohappyeyeballs.start_connection(
            await self.resolver.resolve(dial_host, dial_port),
            happy_eyeballs_delay=HAPPY_EYEBALLS_DELAY,
            interleave=1,
        )
        try:
            if proxy is not None and scheme == "https":
                await _tunnel(loop, sock, proxy, host, port)
            secure = scheme == "https"
            return await loop.create_connection(
                factory,
                sock=sock,
                ssl=self.tls() if secure else None,
                server_hostname=host if secure else None,
            )
        except BaseException:
            sock.close()
            raise


def tls_context(settings: TlsSettings) -> ssl.SSLContext:
    """The provider's TLS: its own CA file or the system's (SSL_CERT_FILE/SSL_CERT_DIR honoured
    by OpenSSL), an optional client certificate, and verification unless turned off."""
    context = ssl.create_default_context(cafile=settings.ca_file)
    if settings.client_cert is not None:
        context.load_cert_chain(settings.client_cert, settings.client_key)
    if not settings.verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


async def _tunnel(
    loop: asyncio.AbstractEventLoop, sock: socket.socket, proxy: Proxy, host: str, port: int
) -> None:
    """CONNECT host:port through the proxy on `sock`; returns once the tunnel is open."""
    authority = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    lines = [f"CONNECT {authority} HTTP/1.1", f"host: {authority}"]
    if proxy.authorization is not None:
        lines.append(f"proxy-authorization: {proxy.authorization}")
    await loop.sock_sendall(sock, ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
    answer = b""
    while b"\r\n\r\n" not in answer:
        data = await loop.sock_recv(sock, 4096)
        if not data:
            raise ProxyRefused(f"proxy {proxy.host}:{proxy.port} closed the connection")
        answer += data
        if len(answer) > _MAX_PROXY_ANSWER:
            raise ProxyRefused(f"proxy {proxy.host}:{proxy.port} sent an oversized answer")
    head, _, rest = answer.partition(b"\r\n\r\n")
    status_line = head.split(b"\r\n", 1)[0].decode("latin-1", "replace")
    parts = status_line.split(" ", 2)
    if len(parts) < 2 or parts[1] != "200":
        raise ProxyRefused(
            f"proxy {proxy.host}:{proxy.port} refused CONNECT to {authority}: {status_line[:200]}"
        )
    if rest:
        # The upstream cannot speak before the TLS client hello: anything here is the proxy's.
        raise ProxyRefused(f"proxy {proxy.host}:{proxy.port} sent bytes after its answer")
