"""The scale-out fixtures: nginx, and the backends the replicas share, each test's own."""

from __future__ import annotations

import secrets
from collections.abc import Iterator

import pytest

from fakes.debian import installed
from scaleout.backends import POSTGRES_SERVER, REDIS_SERVER, forget_redis_keys, psql


@pytest.fixture(scope="session")
def nginx_binary() -> str:
    return installed("nginx", "nginx")


@pytest.fixture
def key_name() -> str:
    """The test's gateway key name: unique, so that its Redis keys are the test's own."""
    return f"scaleout-{secrets.token_hex(6)}"


@pytest.fixture
def shared_database_url() -> Iterator[str]:
    """A PostgreSQL database of the test's own (other tests share the server), dropped after."""
    name = f"mg_{secrets.token_hex(8)}"
    psql(f"{POSTGRES_SERVER}/postgres", f"CREATE DATABASE {name}")
    try:
        yield f"{POSTGRES_SERVER}/{name}"
    finally:
        psql(f"{POSTGRES_SERVER}/postgres", f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@pytest.fixture
def shared_redis_url(key_name: str) -> Iterator[str]:
    """The Redis server other tests share: a key's Redis keys carry its name, so the test's
    are the ones holding `key_name`, deleted after (never FLUSHDB: the server is shared)."""
    yield REDIS_SERVER
    forget_redis_keys(REDIS_SERVER, key_name)
