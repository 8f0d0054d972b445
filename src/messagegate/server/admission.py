"""A request's demand on its key's limits, estimated before it is routed, and its settlement."""

from __future__ import annotations

from messagegate.api.usage import Usage
from messagegate.config import ApiKey, Model, Price
from messagegate.limits.cost import cost_micro_usd
from messagegate.limits.limiter import Limiter, Ticket

# Input tokens are estimated from the body's length: about 4 bytes a token for text, and never
# more tokens than bytes (the bound hard budgets reserve).
BYTES_PER_TOKEN = 4


class Admission:
    def __init__(self, limiter: Limiter) -> None:
        self.limiter = limiter

    def admit(
        self, key: ApiKey | None, model: Model, body_size: int, max_tokens: int
    ) -> Ticket | None:
        """Reserve the request on its key's limits (None: the key has none)."""
        if key is None or not key.limits.enabled:
            return None
        estimate = body_size // BYTES_PER_TOKEN
        cost = 0
        if key.limits.budget is not None:
            # Output is reserved at max_tokens, as Anthropic does, and settled at the end.
            hard = key.limits.budget_mode == "hard"
            worst = Usage(input_tokens=body_size if hard else estimate, output_tokens=max_tokens)
            cost = max((cost_micro_usd(worst, r.price) for r in model.routes), default=0)
        return self.limiter.admit(key, estimate + max_tokens, cost)


def settle(ticket: Ticket | None, usage: Usage, price: Price | None) -> None:
    if ticket is not None:
        used = usage.input_tokens + usage.output_tokens + usage.cache_creation_input_tokens
        ticket.settle(used, cost_micro_usd(usage, price))
