"""What an answer cost, in integer micro-USD (prices are USD per million tokens: a token costs
`price` micro-USD)."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import orjson

from messagegate.config import Price

# Anthropic's cache prices as multiples of the input price, for routes that set none.
CACHE_READ = 0.1
CACHE_WRITE_5M = 1.25
CACHE_WRITE_1H = 2.0


@dataclass(frozen=True, slots=True)
class Rates:
    """Every price of a route, the defaults filled in, and the JSON a ledger row records (an
    answer's cost is worked out where it is settled: server/accounting.py)."""

    input: float
    output: float
    cache_read: float
    cache_write: float
    cache_write_1h: float
    json: str


@lru_cache(maxsize=256)
def rates(price: Price) -> Rates:
    used = price_used(price)
    return Rates(**used, json=orjson.dumps(used).decode())


def price_used(price: Price) -> dict[str, float]:
    """Every price of a route, the defaults filled in (what a ledger row records)."""
    return {
        "input": price.input,
        "output": price.output,
        "cache_read": _or(price.cache_read, price.input * CACHE_READ),
        "cache_write": _or(price.cache_write, price.input * CACHE_WRITE_5M),
        "cache_write_1h": _or(price.cache_write_1h, price.input * CACHE_WRITE_1H),
    }


def _or(value: float | None, default: float) -> float:
    return default if value is None else value
