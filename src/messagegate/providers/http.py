"""What every upstream client shares: the headers relayed to the client, and the one place
where transport failures become GatewayErrors."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager

from messagegate.config import Provider
from messagegate.errors import UpstreamProtocolError, UpstreamTimeout, UpstreamUnreachable
from messagegate.providers.connection import ConnectionDropped, ProtocolViolation, TransportError

_RELAYED_PREFIXES = ("anthropic-ratelimit-", "x-ratelimit-", "retry-after")


def relayed_headers(headers: Mapping[str, str]) -> dict[str, str]:
    """Rate-limit and retry-after headers the client should see (names are lower case)."""
    return {k: v for k, v in headers.items() if k.startswith(_RELAYED_PREFIXES)}


@contextmanager
def upstream_errors(provider: Provider) -> Iterator[None]:
    """Translate transport failures of one provider into the gateway's exception tree."""
    try:
        yield
    except TimeoutError:
        raise UpstreamTimeout(f"provider {provider.name!r} timed out") from None
    except ConnectionDropped:
        raise UpstreamUnreachable(f"provider {provider.name!r} dropped the connection") from None
    except ProtocolViolation as exc:
        raise UpstreamProtocolError(f"provider {provider.name!r} sent {exc}") from None
    except TransportError:
        raise UpstreamUnreachable(f"provider {provider.name!r} failed to answer") from None
    except OSError:
        # Raised only while connecting: refused, unresolvable, or a failed TLS handshake.
        raise UpstreamUnreachable(f"cannot connect to provider {provider.name!r}") from None
