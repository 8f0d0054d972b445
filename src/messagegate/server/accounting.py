"""A request's accounting: its demand on its key's limits, estimated before it is routed, and,
when it ends, the settlement of that reservation and its ledger row (journalled before the
answer's last byte leaves)."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

import orjson

from messagegate.api.usage import Usage
from messagegate.config import ApiKey, Model, Route
from messagegate.config.keyspec import KeyLimits
from messagegate.ledger.journal import Journal
from messagegate.ledger.row import LedgerRow, Outcome
from messagegate.limits.cost import Rates, rates
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
# Routes whose ledger fields are remembered, and models whose worst prices are; past it a memory
# starts over (routes and models made for `provider/model` names come and go).
MAX_ROUTES = 1024


class RouteFields:
    """What a ledger row and a cost need of a route, worked out once per route."""

    __slots__ = ("label", "price", "provider", "rates", "route")

    def __init__(self, route: Route) -> None:
        # Held: the memory is keyed by the route's id, which it keeps from being reused.
        self.route = route
        self.label = route.label
        self.provider = route.provider.name
        self.rates: Rates | None = None if route.price is None else rates(route.price)
        # The price's JSON as the ledger row's journal line holds it (an object, copied as is).
        self.price = None if self.rates is None else orjson.Fragment(self.rates.json)


class WorstPrices:
    """What a model's requests reserve on a budget, worked out once per model: each priced
    route's (input, output) micro-USD a token, without the routes another is dearer than on both
    (one pair for most models: the reservation is one multiply-add)."""

    __slots__ = ("model", "prices")

    def __init__(self, model: Model, routes: Iterable[Rates | None]) -> None:
        # Held: the memory is keyed by the model's id, which it keeps from being reused.
        self.model = model
        priced = {(r.input, r.output) for r in routes if r is not None}
        self.prices = tuple(
            (i, o)
            for i, o in priced
            if not any(p != (i, o) and p[0] >= i and p[1] >= o for p in priced)
        )


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
        self._routes: dict[int, RouteFields] = {}
        self._models: dict[int, WorstPrices] = {}

    def admit(
        self, key: ApiKey | None, model: Model, body_size: int, max_tokens: int
    ) -> Ticket | None:
        """Reserve the request on its key's limits (None: the key has none)."""
        if key is None:
            return None
        limits = key.limits
        if not limits.enabled:
            return None
        cost = (
            0 if limits.budget is None else self._worst_cost(limits, model, body_size, max_tokens)
        )
        return self.limiter.admit(key, body_size // BYTES_PER_TOKEN + max_tokens, cost)

    async def admit_shared(
        self, key: ApiKey | None, model: Model, body_size: int, max_tokens: int
    ) -> Reservation | None:
        """`admit` on the limits every replica shares."""
        if key is None:
            return None
        limits = key.limits
        if not limits.enabled:
            return None
        assert self.shared is not None
        cost = (
            0 if limits.budget is None else self._worst_cost(limits, model, body_size, max_tokens)
        )
        return await self.shared.admit(key, body_size // BYTES_PER_TOKEN + max_tokens, cost)

    def _worst_cost(self, limits: KeyLimits, model: Model, body_size: int, max_tokens: int) -> int:
        """The micro-USD a request reserves on its key's budget: input estimated from the body's
        size (hard mode: a token per byte, its bound), output at max_tokens, on the dearest of the
        model's routes; settled at the end."""
        worst_input = body_size if limits.budget_mode == "hard" else body_size // BYTES_PER_TOKEN
        worst = self._models.get(id(model))
        if worst is None or worst.model is not model:
            if len(self._models) >= MAX_ROUTES:
                self._models.clear()
            routes = (self._fields(route).rates for route in model.routes)
            worst = self._models[id(model)] = WorstPrices(model, routes)
        cost = 0.0
        for input_price, output_price in worst.prices:
            priced = worst_input * input_price + max_tokens * output_price
            cost = priced if priced > cost else cost
        # round() of the dearest is the dearest of the round()s: it never decreases.
        return round(cost)

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
        route = routed.route
        fields = self._routes.get(id(route))
        if fields is None or fields.route is not route:
            fields = self._fields(route)
        # The counts read once, for the cost, the settlement and the row.
        read = usage.cache_read_input_tokens
        hour = usage.cache_creation_1h_input_tokens
        written = usage.cache_creation_input_tokens
        five = written - hour
        tokens_in, tokens_out = usage.input_tokens, usage.output_tokens
        priced = fields.rates
        cost = (
            0
            if priced is None
            else round(
                tokens_in * priced.input
                + tokens_out * priced.output
                + read * priced.cache_read
                + five * priced.cache_write
                + hour * priced.cache_write_1h
            )
        )
        if ticket is not None:
            ticket.settle(tokens_in + tokens_out + written, cost)
        journal = self.journal
        if journal is None:
            return
        started = routed.started
        # A plain tuple: HEAD's values, then TAIL's (ledger/row.py). Times in ms to the
        # microsecond: round() to an integer, then a division (round(x, 3) formats the float).
        row: LedgerRow = (
            exchange.request_id,
            self.clock(),
            key.name if key is not None else "",
            routed.model.name,
            fields.provider,
            tokens_in,
            tokens_out,
            read,
            five,  # cache_write_5m_tokens
            hour,  # cache_write_1h_tokens
            cost,
            (
                exchange.log_fields.get("model", ""),  # model_asked
                fields.label,  # route
                stream,
                200,  # status
                round((self.monotonic() - started) * 1e6) / 1000,  # latency_ms
                round((routed.answered - started) * 1e6) / 1000 if stream else None,  # ttft_ms
                fields.price,
                outcome._value_,  # not .value: a descriptor written in Python (~1,300 instructions)
            ),
        )
        try:
            journal.append(row)
        except OSError as exc:
            error_log.error("cannot journal ledger row %s: %s", exchange.request_id, exc)

    def _fields(self, route: Route) -> RouteFields:
        fields = self._routes.get(id(route))
        if fields is None or fields.route is not route:
            if len(self._routes) >= MAX_ROUTES:
                self._routes.clear()
            fields = self._routes[id(route)] = RouteFields(route)
        return fields


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
