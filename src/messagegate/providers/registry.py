"""One upstream client per configured provider, all sharing the gateway's connection pool."""

from __future__ import annotations

from collections.abc import Iterable

from messagegate.config import Provider
from messagegate.providers.anthropic import AnthropicClient
from messagegate.providers.base import UpstreamClient
from messagegate.providers.http import Scrubber
from messagegate.providers.openai import OpenAIClient
from messagegate.providers.pool import ConnectionPool


def create_clients(
    pool: ConnectionPool, providers: Iterable[Provider]
) -> dict[str, UpstreamClient]:
    providers = list(providers)
    # Every provider's secrets, for every client: an upstream may quote any key it was given.
    scrubber = Scrubber.of(providers)
    clients: dict[str, UpstreamClient] = {}
    for provider in providers:
        if provider.kind == "anthropic":
            clients[provider.name] = AnthropicClient(pool, provider, scrubber)
        else:
            clients[provider.name] = OpenAIClient(pool, provider, scrubber)
    return clients
