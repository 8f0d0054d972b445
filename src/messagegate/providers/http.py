"""What every upstream client shares: the headers relayed to the client, and the one place
where transport failures become GatewayErrors."""

from __future__ import annotations

import logging
import ssl
from collections.abc import Iterable, Mapping
from types import TracebackType
from urllib.parse import unquote, urlsplit

from messagegate.api.headers import RELAYED_PREFIXES
from messagegate.config import Provider
from messagegate.errors import (
    GatewayError,
    UpstreamBusy,
    UpstreamProtocolError,
    UpstreamTimeout,
    UpstreamUnreachable,
)
from messagegate.providers.connection import ConnectionDropped, ProtocolViolation, TransportError
from messagegate.providers.slots import PoolBusy

log = logging.getLogger("messagegate.upstream")


def auth_headers(provider: Provider) -> dict[str, str]:
    """The provider key as its `auth` switch says: `x-api-key: K` or `authorization: Bearer K`."""
    if provider.api_key is None:
        return {}
    if provider.auth == "bearer":
        return {"authorization": f"Bearer {provider.api_key}"}
    return {"x-api-key": str(provider.api_key)}


def relayed_headers(headers: Mapping[str, str]) -> dict[str, str]:
    """Rate-limit and retry-after headers the client should see (names are lower case)."""
    return {k: v for k, v in headers.items() if k.startswith(RELAYED_PREFIXES)}


class Scrubber:
    """Takes every configured secret out of what an upstream sent back before a client sees it:
    a server may quote the key it was sent (or another provider's) in an error message."""

    __slots__ = ("secrets",)

    # Shorter "secrets" would blank ordinary words of a message.
    MIN_LENGTH = 8

    def __init__(self, secrets: Iterable[str]) -> None:
        kept = {s for s in secrets if len(s) >= self.MIN_LENGTH}
        # Longest first: a secret containing another is replaced whole.
        self.secrets = tuple(sorted(kept, key=len, reverse=True))

    @classmethod
    def of(cls, providers: Iterable[Provider]) -> Scrubber:
        secrets: list[str] = []
        for provider in providers:
            if provider.api_key:
                secrets.append(str(provider.api_key))
            parts = urlsplit(provider.base_url)
            secrets.extend(unquote(p) for p in (parts.username, parts.password) if p)
        return cls(secrets)

    def text(self, text: str) -> str:
        for secret in self.secrets:
            if secret in text:
                text = text.replace(secret, "***")
        return text

    def error(self, error: GatewayError) -> GatewayError:
        """`error`, its message and the upstream body it relays scrubbed (in place)."""
        error.message = self.text(error.message)
        error.args = (error.message,)
        if error.body is not None:
            for secret in self.secrets:
                encoded = secret.encode()
                if encoded in error.body:
                    error.body = error.body.replace(encoded, b"***")
        return error


def redirect_error(status: int, headers: Mapping[str, str], name: str) -> UpstreamProtocolError:
    """A 3xx answer: the gateway follows no redirects (a request body would have to be re-sent
    to a place the config never named), so it says where the upstream pointed."""
    location = headers.get("location", "").partition("?")[0] or "nowhere"
    return UpstreamProtocolError(
        f"provider {name!r} answered HTTP {status}, a redirect to {location}; the gateway "
        "follows no redirects: check the provider's base_url"
    )


class upstream_errors:  # lower case, like contextlib.suppress: ``with upstream_errors(p):``
    """Translate transport failures of one provider into the gateway's exception tree.

    A class, not a ``@contextmanager``: every upstream call enters one, and a generator costs
    several times as much to enter and leave.
    """

    __slots__ = ("provider",)

    def __init__(self, provider: Provider) -> None:
        self.provider = provider

    def __enter__(self) -> None:
        return None

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if isinstance(error, OSError | TransportError):
            failure = _gateway_error(error, self.provider.name)
            log.warning("%s", failure.message)
            raise failure from None


def _gateway_error(error: OSError | TransportError, name: str) -> GatewayError:
    if isinstance(error, TimeoutError):
        return UpstreamTimeout(f"provider {name!r} timed out")
    if isinstance(error, ConnectionDropped):
        return UpstreamUnreachable(f"provider {name!r} dropped the connection")
    if isinstance(error, ProtocolViolation):
        return UpstreamProtocolError(f"provider {name!r} sent {error}")
    if isinstance(error, PoolBusy):
        return UpstreamBusy(f"provider {name!r}: {error}")
    if isinstance(error, TransportError):
        return UpstreamUnreachable(f"provider {name!r} failed to answer")
    # An OSError is raised only while connecting: refused, unresolvable, or a failed handshake.
    return UpstreamUnreachable(f"cannot connect to provider {name!r}: {_connect_failure(error)}")


def _connect_failure(error: OSError) -> str:
    if isinstance(error, ssl.SSLCertVerificationError):
        return (
            f"TLS certificate verification failed ({error.verify_message}); trust its "
            "authority with the provider's tls.ca_file or SSL_CERT_FILE"
        )
    if isinstance(error, ssl.SSLError):
        return f"TLS handshake failed ({error.reason or error})"
    return error.strerror or str(error) or type(error).__name__
