"""Ordering the eligible routes of a request: config order with weights, speed, cost or a blend."""

from __future__ import annotations

import random
from collections.abc import Sequence
from itertools import groupby

from messagegate.config import Route
from messagegate.limits.cost import price_used
from messagegate.routing.health import HealthBoard

# A request's input tokens as (not cached, cached prefix): the prices differ.
InputTokens = tuple[int, int]


def estimated_cost(route: Route, tokens: InputTokens, output_tokens: int) -> float | None:
    """USD for this request on this route, or None when the route has no price; the cached
    prefix at the route's cache-read price (Anthropic's 0.1x the input price when unset)."""
    if route.price is None:
        return None
    prices = price_used(route.price)
    fresh, cached = tokens
    total = fresh * prices["input"] + cached * prices["cache_read"]
    return (total + output_tokens * prices["output"]) / 1_000_000


def by_config(routes: Sequence[Route], rng: random.Random) -> list[Route]:
    """Config order; routes of equal priority are shuffled weighted by their provider's weight."""
    ordered: list[Route] = []
    for _, group in groupby(sorted(routes, key=lambda r: r.priority), key=lambda r: r.priority):
        ordered.extend(_weighted_shuffle(list(group), rng))
    return ordered


def _weighted_shuffle(routes: list[Route], rng: random.Random) -> list[Route]:
    if len(routes) < 2:
        return routes
    # Efraimidis-Spirakis: sorting by u**(1/w) draws without replacement in proportion to w.
    return sorted(routes, key=lambda r: rng.random() ** (1 / r.provider.weight), reverse=True)


def by_speed(routes: Sequence[Route], board: HealthBoard, output_tokens: int) -> list[Route]:
    """Fastest expected answer first; unmeasured routes go first so that they get measured."""

    def key(route: Route) -> float:
        seconds = board[route.label].expected_seconds(output_tokens)
        return -1.0 if seconds is None else seconds

    return sorted(routes, key=key)


def by_cost(routes: Sequence[Route], input_tokens: InputTokens, output_tokens: int) -> list[Route]:
    """Cheapest first; unpriced routes last, in config order."""

    def key(route: Route) -> float:
        cost = estimated_cost(route, input_tokens, output_tokens)
        return float("inf") if cost is None else cost

    return sorted(routes, key=key)


def by_balance(
    routes: Sequence[Route], board: HealthBoard, input_tokens: InputTokens, output_tokens: int
) -> list[Route]:
    """Mean of cost and time, each relative to the best route (1.0 = best; unknown counts 1.0)."""
    costs = {r.label: estimated_cost(r, input_tokens, output_tokens) for r in routes}
    times = {r.label: board[r.label].expected_seconds(output_tokens) for r in routes}

    def relative(values: dict[str, float | None], label: str) -> float:
        known = [v for v in values.values() if v is not None and v > 0]
        value = values[label]
        return 1.0 if value is None or not known or value <= 0 else value / min(known)

    return sorted(routes, key=lambda r: relative(costs, r.label) + relative(times, r.label))
