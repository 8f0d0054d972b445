"""What an answer cost, in integer micro-USD (prices are USD per million tokens: a token costs
`price` micro-USD)."""

from __future__ import annotations

from messagegate.api.usage import Usage
from messagegate.config import Price


def cost_micro_usd(usage: Usage, price: Price | None) -> int:
    """Unpriced routes cost nothing; cache reads without a price of their own cost as input."""
    if price is None:
        return 0
    cache_read = price.input if price.cache_read is None else price.cache_read
    total = (
        usage.input_tokens * price.input
        + usage.output_tokens * price.output
        + usage.cache_read_input_tokens * cache_read
        + usage.cache_creation_input_tokens * price.input
    )
    return round(total)
