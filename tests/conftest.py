"""Shared fixtures: fake upstreams, the gateway under test, the official Anthropic SDK client."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import anthropic
import pytest

from fakes import postgres
from fakes.upstream import FakeUpstream

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "claude-code"
GATEWAY_KEY = "mg-test-key-0123456789"
PROVIDER_KEY = "sk-provider-secret-abcdef"
# What the `sdk` fixture gives: a maker of SDK clients for a gateway URL.
SDK = Callable[..., anthropic.AsyncAnthropic]


def claude_code_fixture(name: str) -> dict[str, Any]:
    fixture: dict[str, Any] = json.loads((FIXTURES / f"{name}.json").read_text())
    return fixture


def claude_code_headers(name: str) -> dict[str, str]:
    captured = json.loads((FIXTURES / "requests.json").read_text())[name]["headers"]
    return {k: v for k, v in captured.items() if k not in ("x-api-key", "content-length")}


async def _running_upstream() -> AsyncIterator[FakeUpstream]:
    fake = FakeUpstream()
    await fake.start()
    yield fake
    await fake.stop()


upstream = pytest.fixture(_running_upstream, name="upstream")
second_upstream = pytest.fixture(_running_upstream, name="second_upstream")


@pytest.fixture
async def sdk() -> AsyncIterator[SDK]:
    """Makes official SDK clients (no retries) for a gateway URL; closes them after the test."""
    clients: list[anthropic.AsyncAnthropic] = []

    def make(base_url: str, key: str = GATEWAY_KEY, **kwargs: Any) -> anthropic.AsyncAnthropic:
        options: dict[str, Any] = {"max_retries": 0, "timeout": 20, **kwargs}
        client = anthropic.AsyncAnthropic(base_url=base_url, api_key=key, **options)
        clients.append(client)
        return client

    yield make
    for client in clients:
        await client.close()


@pytest.fixture(scope="module")
async def postgres_module_database() -> AsyncIterator[str]:
    """One PostgreSQL database per test module, with the current schema; dropped at the end."""
    url = await postgres.create_database()
    yield url
    await postgres.drop_database(url)


@pytest.fixture
async def postgres_url(postgres_module_database: str) -> str:
    """The module's PostgreSQL database, emptied for this test."""
    await postgres.empty(postgres_module_database)
    return postgres_module_database


@pytest.fixture(params=["sqlite", "postgresql"])
def database(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Where the test's keys and ledger live: an SQLite file, or a PostgreSQL database."""
    if request.param == "sqlite":
        return str(tmp_path / "data" / "mg.db")
    url: str = request.getfixturevalue("postgres_url")
    return url
