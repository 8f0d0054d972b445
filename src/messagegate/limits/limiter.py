"""The in-process limiter: each key's rate buckets, concurrency leases and budget, checked and
reserved in one step at admission and settled when the answer ends.

Nothing is reserved by a refused request. Per process: with several workers (and no shared
store) each enforces the limits on its own.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Protocol

from messagegate.config import ApiKey
from messagegate.config.keyspec import KeyLimits, iso_time
from messagegate.errors import BudgetExhausted, RateLimited
from messagegate.limits.gcra import Bucket
from messagegate.limits.periods import Periods

# Clients such as Claude Code give up on a retry-after above 60 s.
MAX_RETRY_AFTER = 60


class KeyState:
    """One key's counters; rebuilt (emptied) when its limits change."""

    __slots__ = (
        "active",
        "budget",
        "hard",
        "limits",
        "name",
        "period_start",
        "requests",
        "requests_limit",
        "reserved",
        "spent",
        "tokens",
        "tokens_limit",
    )

    def __init__(self, name: str, limits: KeyLimits) -> None:
        self.name = name
        self.limits = limits
        # micro-USD (None: no budget); hard: a request is admitted only when its worst case fits.
        self.budget = None if limits.budget is None else round(limits.budget * 1_000_000)
        self.hard = limits.budget_mode == "hard"
        self.requests = Bucket(limits.rpm) if limits.rpm else None
        self.tokens = Bucket(limits.tpm) if limits.tpm else None
        self.requests_limit = (REQUESTS_LIMIT, b"%d" % (limits.rpm or 0))
        self.tokens_limit = (TOKENS_LIMIT, b"%d" % (limits.tpm or 0))
        self.active = 0
        self.period_start = -math.inf
        # micro-USD: settled in the current period; reserved by requests still running.
        self.spent = 0
        self.reserved = 0


class Reservation(Protocol):
    """An admitted request's hold on its key's limits (in process, or shared)."""

    def settle(self, tokens: int, cost: int) -> None: ...
    def release(self) -> None: ...
    def headers(self) -> list[tuple[bytes, bytes]]: ...


class Ticket:
    """An admitted request's reservations; `settle` (or `release`) gives them back, once."""

    __slots__ = ("cost", "limiter", "period_start", "settled", "state", "tokens")

    def __init__(self, limiter: Limiter, state: KeyState, tokens: int, cost: int) -> None:
        self.limiter = limiter
        self.state = state
        self.tokens = tokens
        self.cost = cost
        self.period_start = state.period_start
        self.settled = False

    def settle(self, tokens: int, cost: int) -> None:
        """The request used `tokens` and cost `cost` micro-USD."""
        if self.settled:
            return
        self.settled = True
        state = self.state
        state.active -= 1
        if state.tokens is not None:
            state.tokens.adjust(tokens - self.tokens, self.limiter.clock())
        state.reserved -= self.cost
        # Spend of a period that has ended no longer counts against the budget.
        if self.period_start == state.period_start:
            state.spent += cost

    def release(self) -> None:
        """The request ended without an answer: nothing used."""
        self.settle(0, 0)

    def headers(self) -> list[tuple[bytes, bytes]]:
        return self.limiter.headers(self.state, self.limiter.clock())


class Limiter:
    def __init__(
        self, clock: Callable[[], float] = time.time, periods: Periods | None = None
    ) -> None:
        self.clock = clock
        self.periods = periods or Periods()
        self._states: dict[str, KeyState] = {}

    def admit(self, key: ApiKey, tokens: int, cost: int) -> Ticket:
        """Reserve one request, `tokens` tokens and `cost` micro-USD, or raise RateLimited or
        BudgetExhausted. `cost` is what hard mode must fit in the budget (its worst case)."""
        state = self._states.get(key.name)
        if state is None or state.limits is not key.limits:
            state = self._state(key)
        now = self.clock()
        limits = state.limits
        if limits.concurrency is not None and state.active >= limits.concurrency:
            raise self.limited(
                state, now, 1.0, f"{limits.concurrency} requests at once", "concurrency"
            )
        if state.budget is not None:
            self._check_budget(state, now, cost)
        if state.requests is not None:
            wait = state.requests.take(1, now)
            if wait:
                raise self.limited(state, now, wait, f"{limits.rpm} requests per minute", "rpm")
        if state.tokens is not None:
            wait = state.tokens.take(tokens, now)
            if wait:
                if state.requests is not None:
                    state.requests.adjust(-1, now)
                raise self.limited(state, now, wait, f"{limits.tpm} tokens per minute", "tpm")
        state.active += 1
        state.reserved += cost
        return Ticket(self, state, tokens, cost)

    def seed(self, key: ApiKey, spent: int) -> None:
        """Start the key's current period with `spent` micro-USD (what the ledger holds)."""
        state = self._state(key)
        start, _ = self.periods.bounds(key.limits.period, self.clock())
        state.period_start, state.spent = start, spent

    def spend(self, key: ApiKey, cost: int) -> None:
        """Count `cost` micro-USD settled on the shared store, for when this process falls back
        to its own limits."""
        state = self._state(key)
        start, _ = self.periods.bounds(key.limits.period, self.clock())
        if start != state.period_start:
            state.period_start, state.spent = start, 0
        state.spent += cost

    def _state(self, key: ApiKey) -> KeyState:
        state = self._states.get(key.name)
        if state is None or (state.limits is not key.limits and state.limits != key.limits):
            state = self._states[key.name] = KeyState(key.name, key.limits)
        state.limits = key.limits  # equal: the same object next time, for the cheap test above
        return state

    def _check_budget(self, state: KeyState, now: float, cost: int) -> None:
        budget = state.budget
        assert budget is not None
        period = state.limits.period
        if period is not None:
            start = self.periods.bounds(period, now)[0]
            if start != state.period_start:
                state.period_start, state.spent = start, 0
        committed = state.spent + state.reserved
        # soft: admitted while anything is left (overshoot <= one request's cost);
        # hard: only when its worst case fits.
        if committed + cost > budget if state.hard else committed >= budget:
            _, end = self.periods.bounds(period, now)
            raise budget_error(state, budget, end)

    def limited(
        self, state: KeyState, now: float, wait: float, what: str, denial: str
    ) -> RateLimited:
        retry_after = min(max(math.ceil(wait), 1), MAX_RETRY_AFTER)
        headers = {name.decode(): value.decode() for name, value in self.headers(state, now)}
        return RateLimited(
            f"rate limit of key {state.name!r} exceeded: {what}; retry after {retry_after} s",
            retry_after,
            headers,
            denial,
        )

    def headers(self, state: KeyState, now: float) -> list[tuple[bytes, bytes]]:
        """Anthropic's `anthropic-ratelimit-*` headers for the key's own buckets, encoded: an
        answer's head takes them as they are (names and limits are encoded once per key)."""
        headers: list[tuple[bytes, bytes]] = []
        requests, tokens = state.requests, state.tokens
        if requests is not None:
            remaining, full_at = requests.report(now)
            headers += (
                state.requests_limit,
                (REQUESTS_REMAINING, b"%d" % remaining),
                (REQUESTS_RESET, _rfc3339(full_at)),
            )
        if tokens is not None:
            remaining, full_at = tokens.report(now)
            headers += (
                state.tokens_limit,
                (TOKENS_REMAINING, b"%d" % remaining),
                (TOKENS_RESET, _rfc3339(full_at)),
            )
        return headers


(
    REQUESTS_LIMIT,
    REQUESTS_REMAINING,
    REQUESTS_RESET,
    TOKENS_LIMIT,
    TOKENS_REMAINING,
    TOKENS_RESET,
) = (
    f"anthropic-ratelimit-{kind}-{part}".encode()
    for kind in ("requests", "tokens")
    for part in ("limit", "remaining", "reset")
)


def budget_error(state: KeyState, budget: int, end: float) -> BudgetExhausted:
    limits = state.limits
    per = f" per {limits.period}" if limits.period else ""
    resets = f"it resets at {iso_time(end)}" if end != math.inf else "it does not reset"
    used = (state.spent + state.reserved) / 1_000_000
    return BudgetExhausted(
        f"the budget of key {state.name!r} ({limits.budget:.2f} USD{per}) is spent "
        f"({used:.4f} USD used or reserved); {resets}"
    )


_MINUTES: dict[int, bytes] = {}
# The last second formatted, and its text: most answers of a busy second share their reset time.
_last: tuple[int, bytes] = (0, b"")


def _rfc3339(epoch: float) -> bytes:
    """RFC 3339 to the second; each minute's prefix is formatted once (formatting a time per
    header cost more than the rest of the limits together)."""
    global _last
    second = math.ceil(epoch)
    if second == _last[0]:
        return _last[1]
    minute, within = divmod(second, 60)
    prefix = _MINUTES.get(minute)
    if prefix is None:
        if len(_MINUTES) >= 64:
            _MINUTES.clear()
        prefix = _MINUTES[minute] = time.strftime(
            "%Y-%m-%dT%H:%M:", time.gmtime(second - within)
        ).encode()
    text = b"%s%02dZ" % (prefix, within)
    _last = (second, text)
    return text
