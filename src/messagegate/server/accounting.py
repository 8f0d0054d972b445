"""A request's accounting: its demand on its key's limits, estimated before it is routed, and,
when it ends, the settlement of that reservation and its ledger row (journalled before the
answer's last byte leaves)."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from messagegate.api.usage import Usage
from messagegate.config import ApiKey, Model
from messagegate.ledger.journal import Journal
from messagegate.ledger.row import LedgerRow, Outcome
from messagegate.limits.cost import cost_micro_usd, price_json
from messagegate.limits.limiter import Limiter, Reservation, Ticket
from messagegate.routing.router import Routed
from messagegate.server.auth import KeyChecker
from messagegate.server.exchange import Exchange
from messagegate.store.base import LedgerStore

if TYPE_CHECKING:
    from messagegate.limits.shared import SharedLimiter

error_log = logging.getLogger("messagegate.error")

# Input tokens are estimated from the body's length: about 4 bytes a token for text, and never
# more tokens than bytes (the bound hard budgets reserve).
BYTES_PER_TOKEN = 4


class Accounting:
    def __init__(
        self,
        limiter: Limiter,
        journal: Journal | None = None,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
        shared: SharedLimiter | None = None,
    ) -> None:
        self.limiter = limiter
        # With `redis:`, admission is awaited (admit_shared); else it stays synchronous.
        self.shared = shared
        self.journal = journal
        self.clock = clock
        # The clock of Routed.started and .answered (the router's health board's).
        self.monotonic = monotonic

    def admit(
        self, key: ApiKey | None, model: Model, body_size: int, max_tokens: int
    ) -> Ticket | None:
        """Reserve the request on its key's limits (None: the key has none)."""
        if key is None or not key.limits.enabled:
            return None
        tokens, cost = _demand(key, model, body_size, max_tokens)
        return self.limiter.admit(key, tokens, cost)

    async def admit_shared(
        self, key: ApiKey | None, model: Model, body_size: int, max_tokens: int
    ) -> Reservation | None:
        """`admit` on the limits every replica shares."""
        if key is None or not key.limits.enabled:
            return None
        assert self.shared is not None
        tokens, cost = _demand(key, model, body_size, max_tokens)
        return await self.shared.admit(key, tokens, cost)

    def finish(
        self,
        exchange: Exchange,
        key: ApiKey | None,
        ticket: Reservation | None,
        routed: Routed[Any],
        usage: Usage,
        outcome: Outcome,
        stream: bool,
    ) -> None:
        """An answer ended (or was cut): settle its reservation, journal its row."""
        price = routed.route.price
        cost = cost_micro_usd(usage, price)
        if ticket is not None:
            used = usage.input_tokens + usage.output_tokens + usage.cache_creation_input_tokens
            ticket.settle(used, cost)
        if self.journal is None:
            return
        monotonic = self.monotonic()
        hour = usage.cache_creation_1h_input_tokens
        row = LedgerRow(
            request_id=exchange.request_id,
            time=self.clock(),
            key=key.name if key is not None else "",
            model_asked=exchange.log_fields.get("model", ""),
            model=routed.model.name,
            route=routed.route.label,
            provider=routed.route.provider.name,
            stream=stream,
            status=200,
            latency_ms=round((monotonic - routed.started) * 1000, 3),
            ttft_ms=round((routed.answered - routed.started) * 1000, 3) if stream else None,
            input_tokens=usage.input_tokens,
            output_tokens=usage.output_tokens,
            cache_read_tokens=usage.cache_read_input_tokens,
            cache_write_5m_tokens=usage.cache_creation_input_tokens - hour,
            cache_write_1h_tokens=hour,
            cost_micro_usd=cost,
            price=price_json(price) if price is not None else None,
            outcome=outcome.value,
        )
        try:
            self.journal.append(row)
        except OSError as exc:
            error_log.error("cannot journal ledger row %s: %s", exchange.request_id, exc)


def _demand(key: ApiKey, model: Model, body_size: int, max_tokens: int) -> tuple[int, int]:
    """The tokens and micro-USD a request reserves: input estimated from the body's size, output
    at max_tokens, as Anthropic does (both settled at the end). `cost` is what hard mode must fit
    in the budget: its worst case."""
    estimate = body_size // BYTES_PER_TOKEN
    cost = 0
    if key.limits.budget is not None:
        hard = key.limits.budget_mode == "hard"
        worst = Usage(input_tokens=body_size if hard else estimate, output_tokens=max_tokens)
        cost = max((cost_micro_usd(worst, r.price) for r in model.routes), default=0)
    return estimate + max_tokens, cost


async def seed_budgets(
    limiter: Limiter, store: LedgerStore, keys: KeyChecker, shared: SharedLimiter | None = None
) -> None:
    """At start, each budget's current period begins with what the ledger says it spent (from
    the UTC day holding the period's start: a period in another time zone may count some hours
    before it, never fewer)."""
    budgeted = {key.name: key for key, _, refusal in keys.entries.values() if refusal is None}
    now = limiter.clock()
    for key in budgeted.values():
        if key.limits.budget is None:
            continue
        start, _ = limiter.periods.bounds(key.limits.period, now)
        since = (
            "0000-00-00" if start == -math.inf else time.strftime("%Y-%m-%d", time.gmtime(start))
        )
        spent = await store.spent(key.name, since)
        limiter.seed(key, spent)
        if shared is not None:
            await shared.seed(key, spent)
