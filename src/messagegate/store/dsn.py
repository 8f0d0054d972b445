"""Database URLs as output may show them."""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit


def redacted(dsn: str) -> str:
    """The URL without its password."""
    parts = urlsplit(dsn)
    if parts.password is None:
        return dsn
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{parts.username or ''}:***@{host}"))
