"""The pooled aiohttp session and the one place aiohttp's exceptions become GatewayErrors."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager

import aiohttp
from multidict import CIMultiDictProxy

from messagegate.config import Provider, Timeouts
from messagegate.errors import UpstreamTimeout, UpstreamUnreachable

_RELAYED_PREFIXES = ("anthropic-ratelimit-", "x-ratelimit-", "retry-after")


def create_session() -> aiohttp.ClientSession:
    connector = aiohttp.TCPConnector(
        limit=0, ttl_dns_cache=300, keepalive_timeout=60, enable_cleanup_closed=True
    )
    return aiohttp.ClientSession(connector=connector, auto_decompress=True, trust_env=False)


def completion_timeout(timeouts: Timeouts) -> aiohttp.ClientTimeout:
    """For a whole-body answer the first byte is the slow part; reads after it are quick."""
    return aiohttp.ClientTimeout(
        total=timeouts.total, sock_connect=timeouts.connect, sock_read=timeouts.first_byte
    )


def stream_timeout(timeouts: Timeouts) -> aiohttp.ClientTimeout:
    """Reads wait up to first_byte until the first event; the stream reader then sets idle."""
    return aiohttp.ClientTimeout(
        total=timeouts.total, sock_connect=timeouts.connect, sock_read=timeouts.first_byte
    )


def relayed_headers(headers: CIMultiDictProxy[str]) -> dict[str, str]:
    """Rate-limit and retry-after headers the client should see, as the upstream sent them."""
    return {k.lower(): v for k, v in headers.items() if k.lower().startswith(_RELAYED_PREFIXES)}


@contextmanager
def upstream_errors(provider: Provider) -> Iterator[None]:
    """Translate transport failures of one provider into the gateway's exception tree."""
    try:
        yield
    except (TimeoutError, aiohttp.ServerTimeoutError):
        raise UpstreamTimeout(f"provider {provider.name!r} timed out") from None
    except aiohttp.ClientConnectorError:
        raise UpstreamUnreachable(f"cannot connect to provider {provider.name!r}") from None
    except (aiohttp.ClientPayloadError, aiohttp.ServerDisconnectedError):
        raise UpstreamUnreachable(f"provider {provider.name!r} dropped the connection") from None
    except (aiohttp.ClientError, asyncio.IncompleteReadError, ConnectionError):
        raise UpstreamUnreachable(f"provider {provider.name!r} failed to answer") from None
