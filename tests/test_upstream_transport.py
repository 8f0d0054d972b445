"""How the gateway reaches upstreams: per-provider TLS, HTTP proxies (CONNECT for https), NO_PROXY,
happy eyeballs over both address families, and cached name resolution."""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import trustme

import fakes.anthropic_script as script
import fakes.openai_script as openai_script
from conftest import PROVIDER_KEY
from fakes.gateway import build_config, running_gateway
from fakes.proxy import FakeProxy
from fakes.upstream import FakeUpstream, Reply
from helpers import envelope, post
from messagegate.config import ConfigError, Timeouts, environment_proxy
from messagegate.providers.dialer import DNS_CACHE_SECONDS, Dialer, Resolver
from messagegate.providers.pool import ConnectionPool, Endpoint, RequestHead

ANSWER = script.message([{"type": "text", "text": "through"}])
BODY = {"model": "claude-test", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}


class Authority:
    """A local CA, a server certificate for 127.0.0.1 and a client certificate, as PEM files."""

    def __init__(self, folder: Path) -> None:
        self.ca = trustme.CA()
        self.server = self.ca.issue_cert("127.0.0.1", "localhost")
        self.client = self.ca.issue_cert("gateway@example.test")
        self.ca_file = folder / "ca.pem"
        self.ca.cert_pem.write_to_path(str(self.ca_file))
        self.client_cert = folder / "client.pem"
        self.client_key = folder / "client.key"
        self.client.cert_chain_pems[0].write_to_path(str(self.client_cert))
        self.client.private_key_pem.write_to_path(str(self.client_key))

    def server_context(self, *, require_client_cert: bool = False) -> ssl.SSLContext:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.server.configure_cert(context)
        if require_client_cert:
            context.verify_mode = ssl.CERT_REQUIRED
            self.ca.configure_trust(context)
        return context


@pytest.fixture
def authority(tmp_path: Path) -> Authority:
    return Authority(tmp_path)


async def _started(upstream: FakeUpstream) -> AsyncIterator[FakeUpstream]:
    await upstream.start()
    upstream.default = script.reply(ANSWER)
    yield upstream
    await upstream.stop()


@pytest.fixture
async def tls_upstream(authority: Authority) -> AsyncIterator[FakeUpstream]:
    async for upstream in _started(FakeUpstream(tls=authority.server_context())):
        yield upstream


@pytest.fixture
async def mtls_upstream(authority: Authority) -> AsyncIterator[FakeUpstream]:
    context = authority.server_context(require_client_cert=True)
    async for upstream in _started(FakeUpstream(tls=context)):
        yield upstream


def config(base_url: str, environ: dict[str, str] | None = None, **provider: Any) -> Any:
    raw = {
        "providers": {
            "anth": {"kind": "anthropic", "base_url": base_url, "api_key": PROVIDER_KEY, **provider}
        },
        "models": {"claude-test": {"routes": [{"provider": "anth", "model": "claude-up"}]}},
    }
    return build_config(raw, environ)


async def ask(cfg: Any) -> tuple[int, bytes]:
    async with running_gateway(cfg) as (url, _):
        status, _, raw = await post(url, "/v1/messages", BODY, key=None)
    return status, raw


# -- TLS --------------------------------------------------------------------------------------


async def test_a_providers_own_ca_file_is_trusted(
    tls_upstream: FakeUpstream, authority: Authority
) -> None:
    status, raw = await ask(config(tls_upstream.url, tls={"ca_file": str(authority.ca_file)}))
    assert status == 200, raw
    assert tls_upstream.received[0].headers["x-api-key"] == PROVIDER_KEY


async def test_a_self_signed_upstream_fails_closed_saying_why(
    tls_upstream: FakeUpstream, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="messagegate.upstream"):
        status, raw = await ask(config(tls_upstream.url))
    assert status == 502
    kind, message = envelope(raw)
    assert kind == "api_error"
    assert "cannot connect to provider 'anth'" in message
    assert "certificate verification failed" in message
    assert "tls.ca_file" in message
    assert tls_upstream.received == []
    logged = [r.getMessage() for r in caplog.records if r.name == "messagegate.upstream"]
    assert logged
    assert all("certificate verification failed" in line for line in logged)


async def test_verify_false_accepts_any_certificate(tls_upstream: FakeUpstream) -> None:
    status, raw = await ask(config(tls_upstream.url, tls={"verify": False}))
    assert status == 200, raw


async def test_ssl_cert_file_is_honoured(
    tls_upstream: FakeUpstream, authority: Authority, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SSL_CERT_FILE", str(authority.ca_file))
    status, raw = await ask(config(tls_upstream.url))
    assert status == 200, raw


async def test_a_client_certificate_is_presented(
    mtls_upstream: FakeUpstream, authority: Authority
) -> None:
    ca = str(authority.ca_file)
    with_cert = {
        "ca_file": ca,
        "client_cert": str(authority.client_cert),
        "client_key": str(authority.client_key),
    }
    assert (await ask(config(mtls_upstream.url, tls=with_cert)))[0] == 200
    status, raw = await ask(config(mtls_upstream.url, tls={"ca_file": ca}))
    assert status == 502
    # TLS 1.3: the server refuses the certificate after the client's side of the handshake.
    assert "provider 'anth'" in envelope(raw)[1]
    assert len(mtls_upstream.received) == 1


def test_unreadable_tls_files_fail_at_start(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"providers\.anth\.tls: cannot load"):
        config("https://127.0.0.1:1", tls={"ca_file": str(tmp_path / "missing.pem")})
    with pytest.raises(ConfigError, match=r"providers\.anth\.tls\.client_key: needs client_cert"):
        config("https://127.0.0.1:1", tls={"client_key": str(tmp_path / "k.pem")})


# -- proxies ----------------------------------------------------------------------------------


async def test_https_goes_through_a_connect_tunnel(
    tls_upstream: FakeUpstream, authority: Authority
) -> None:
    async with FakeProxy() as proxy:
        cfg = config(
            tls_upstream.url,
            {"HTTPS_PROXY": proxy.url},
            tls={"ca_file": str(authority.ca_file)},
        )
        status, raw = await ask(cfg)
    assert status == 200, raw
    assert [(r.method, r.target) for r in proxy.requests] == [
        ("CONNECT", f"127.0.0.1:{tls_upstream.port}")
    ]
    # The proxy saw no request inside the tunnel; the upstream got it whole.
    assert "x-api-key" not in proxy.requests[0].headers
    assert tls_upstream.received[0].headers["x-api-key"] == PROVIDER_KEY


async def test_plain_http_is_forwarded_with_the_proxys_credentials(
    upstream: FakeUpstream,
) -> None:
    upstream.default = script.reply(ANSWER)
    async with FakeProxy(credentials="Basic dXNlcjpwJTIw") as proxy:
        proxy_url = f"http://user:p%2520@127.0.0.1:{proxy.port}"
        status, raw = await ask(config(upstream.url, {"http_proxy": proxy_url}))
    assert status == 200, raw
    assert proxy.requests[0].method == "POST"
    assert proxy.requests[0].target == f"{upstream.url}/v1/messages"
    assert proxy.requests[0].headers["proxy-authorization"] == "Basic dXNlcjpwJTIw"
    assert upstream.received[0].path == "/v1/messages"


async def test_a_proxy_that_refuses_is_a_clear_502(
    tls_upstream: FakeUpstream, authority: Authority
) -> None:
    async with FakeProxy(credentials="Basic c2VjcmV0") as proxy:
        cfg = config(tls_upstream.url, proxy=proxy.url, tls={"ca_file": str(authority.ca_file)})
        status, raw = await ask(cfg)
    assert status == 502
    message = envelope(raw)[1]
    assert f"refused CONNECT to 127.0.0.1:{tls_upstream.port}" in message
    assert "407" in message
    assert tls_upstream.received == []


@pytest.mark.parametrize(
    ("environ", "provider", "proxied"),
    [
        ({"NO_PROXY": "127.0.0.1"}, {}, False),
        ({"no_proxy": "localhost, 127.0.0.0/8"}, {}, False),
        ({"NO_PROXY": "*"}, {}, False),
        ({"NO_PROXY": "example.test"}, {}, True),
        ({}, {"proxy": "PROXY"}, True),
        ({"HTTP_PROXY": "PROXY"}, {"proxy": "direct"}, False),
    ],
    ids=["no-proxy-ip", "no-proxy-cidr", "no-proxy-all", "no-proxy-other", "own", "direct"],
)
async def test_which_requests_use_the_proxy(
    upstream: FakeUpstream,
    environ: dict[str, str],
    provider: dict[str, str],
    proxied: bool,
) -> None:
    upstream.default = script.reply(ANSWER)
    async with FakeProxy() as proxy:
        env = {"HTTP_PROXY": proxy.url, **environ}
        env = {k: proxy.url if v == "PROXY" else v for k, v in env.items()}
        own = {k: proxy.url if v == "PROXY" else v for k, v in provider.items()}
        status, raw = await ask(config(upstream.url, env, **own))
    assert status == 200, raw
    assert len(proxy.requests) == (1 if proxied else 0)
    assert len(upstream.received) == 1


@pytest.mark.parametrize(
    ("url", "environ", "expected"),
    [
        ("https://api.example.test/v1", {"HTTPS_PROXY": "http://p:1"}, "http://p:1"),
        (
            "https://api.example.test/v1",
            {"https_proxy": "http://a:1", "HTTPS_PROXY": "x"},
            "http://a:1",
        ),
        ("https://api.example.test/v1", {"HTTP_PROXY": "http://p:1"}, None),
        ("http://api.example.test/v1", {"ALL_PROXY": "http://p:1"}, "http://p:1"),
        (
            "https://api.example.test",
            {"HTTPS_PROXY": "http://p:1", "NO_PROXY": ".example.test"},
            None,
        ),
        (
            "https://api.example.test",
            {"HTTPS_PROXY": "http://p:1", "NO_PROXY": "ample.test"},
            "http://p:1",
        ),
        (
            "https://api.example.test:8443",
            {"HTTPS_PROXY": "http://p:1", "NO_PROXY": "api.example.test:443"},
            "http://p:1",
        ),
        (
            "https://api.example.test:8443",
            {"HTTPS_PROXY": "http://p:1", "NO_PROXY": "api.example.test:8443"},
            None,
        ),
        ("http://[::1]:9/v1", {"HTTP_PROXY": "http://p:1", "NO_PROXY": "::1"}, None),
    ],
)
def test_environment_proxy_rules(url: str, environ: dict[str, str], expected: str | None) -> None:
    assert environment_proxy(url, environ)[0] == expected


def test_a_socks_proxy_is_refused_at_start_naming_the_variable() -> None:
    with pytest.raises(ConfigError, match=r"test\.yaml: HTTPS_PROXY: expected an http:// proxy"):
        config("https://api.example.test", {"HTTPS_PROXY": "socks5://127.0.0.1:1080"})


# -- address families and name resolution --------------------------------------------------------


async def test_both_address_families_are_tried(upstream: FakeUpstream) -> None:
    """A name whose IPv6 address refuses still reaches the IPv4 one (and the other way round)."""
    upstream.default = script.reply(ANSWER)
    port = upstream.port
    refused_v6 = (socket.AF_INET6, socket.SOCK_STREAM, 6, "", ("::1", port, 0, 0))
    good_v4 = (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", port))
    for order in ([refused_v6, good_v4], [good_v4, refused_v6]):
        lookups: list[tuple[str, int]] = []

        async def lookup(
            host: str, port: int, answer: list[Any] = order, seen: list[Any] = lookups
        ) -> list[Any]:
            seen.append((host, port))
            return answer

        pool = ConnectionPool()
        dialer = Dialer(Resolver(lookup=lookup))
        head = RequestHead(
            Endpoint.parse(f"http://dual.example.test:{port}/v1/messages"), {}, dialer
        )
        response = await pool.post(head, head.encode(b"{}"), Timeouts())
        assert response.status == 200
        await response.read()
        pool.close()
        assert lookups == [("dual.example.test", port)]
    assert [r.headers["host"] for r in upstream.received] == [f"dual.example.test:{port}"] * 2


async def test_names_are_resolved_once_per_cache_period() -> None:
    now = [0.0]
    lookups: list[str] = []

    async def lookup(host: str, port: int) -> list[Any]:
        lookups.append(host)
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", port))]

    resolver = Resolver(clock=lambda: now[0], lookup=lookup)
    for _ in range(3):
        await resolver.resolve("api.example.test", 443)
    now[0] = DNS_CACHE_SECONDS - 0.1
    await resolver.resolve("api.example.test", 443)
    assert lookups == ["api.example.test"]
    now[0] = DNS_CACHE_SECONDS + 0.1
    await resolver.resolve("api.example.test", 443)
    await resolver.resolve("other.example.test", 443)
    assert lookups == ["api.example.test", "api.example.test", "other.example.test"]


async def test_a_failed_lookup_is_not_cached() -> None:
    calls = 0

    async def lookup(host: str, port: int) -> list[Any]:
        nonlocal calls
        calls += 1
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    resolver = Resolver(lookup=lookup)
    for _ in range(2):
        with pytest.raises(socket.gaierror):
            await resolver.resolve("nowhere.example.test", 443)
    assert calls == 2


@pytest.mark.parametrize(
    ("auth", "header", "value"),
    [
        (None, "authorization", f"Bearer {PROVIDER_KEY}"),
        ("x-api-key", "x-api-key", PROVIDER_KEY),
    ],
)
async def test_the_auth_switch_works_for_openai_providers(
    upstream: FakeUpstream, auth: str | None, header: str, value: str
) -> None:
    upstream.default = Reply(json=openai_script.completion("gpt-up", "ok", []))
    provider = {"kind": "openai", "base_url": upstream.url + "/v1", "api_key": PROVIDER_KEY}
    if auth is not None:
        provider["auth"] = auth
    raw = {
        "providers": {"oai": provider},
        "models": {"claude-test": {"routes": [{"provider": "oai", "model": "gpt-up"}]}},
    }
    status, body = await ask(build_config(raw))
    assert status == 200, body
    sent = upstream.received[0].headers
    assert sent[header] == value
    other = "x-api-key" if header == "authorization" else "authorization"
    assert other not in sent


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        (b"", "closed the connection"),
        (b"HTTP/1.1 200 OK\r\n\r\nunasked", "sent bytes after its answer"),
        (b"HTTP/1.1 200 OK\r\nx-pad: " + b"a" * 20_000, "sent an oversized answer"),
    ],
    ids=["closed", "bytes-after", "oversized"],
)
async def test_a_proxy_that_misbehaves_is_a_clear_502(
    tls_upstream: FakeUpstream, authority: Authority, answer: bytes, expected: str
) -> None:
    async def misbehave(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(answer)
        await writer.drain()
        writer.close()

    proxy = await asyncio.start_server(misbehave, "127.0.0.1", 0)
    port = proxy.sockets[0].getsockname()[1]
    try:
        cfg = config(
            tls_upstream.url,
            proxy=f"http://127.0.0.1:{port}",
            tls={"ca_file": str(authority.ca_file)},
        )
        status, raw = await ask(cfg)
    finally:
        proxy.close()
        await proxy.wait_closed()
    assert status == 502
    assert expected in envelope(raw)[1]
    assert tls_upstream.received == []
