"""The in-process limiter: each key's rate buckets, concurrency leases and budget, checked and
reserved in one step at admission and settled when the answer ends.

Nothing is reserved by a refused request. Per process: with several workers (and no shared
store) each enforces the limits on its own.

A rate bucket (`rpm` requests or `tpm` tokens, refilled continuously; full, it holds one minute's
worth) is a GCRA: one number, its theoretical arrival time (`tat`), instead of a refill loop.
Taking `amount` moves it by amount * interval; it is admitted when that stays within one minute
of now. An amount larger than the whole bucket is admitted when the bucket is full, and leaves it
in debt, as a refill would. Its arithmetic is written out where it is used: a Python call per
step would cost more than the step.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Protocol

from messagegate.config import ApiKey
from messagegate.config.keyspec import KeyLimits, iso_time
from messagegate.errors import BudgetExhausted, RateLimited
from messagegate.limits.periods import Periods

# Clients such as Claude Code give up on a retry-after above 60 s.
MAX_RETRY_AFTER = 60
# Seconds a full bucket's worth of units takes to refill. A module constant: a class attribute
# read through an instance is a slower lookup than a global, per request.
WINDOW = 60.0


class KeyState:
    """One key's counters; rebuilt (emptied) when its limits change."""

    __slots__ = (
        "active",
        "budget",
        "hard",
        "limits",
        "lines",
        "name",
        "period_end",
        "period_start",
        "requests_interval",
        "requests_tat",
        "reserved",
        "rpm",
        "spent",
        "tokens_interval",
        "tokens_tat",
        "tpm",
    )

    def __init__(self, name: str, limits: KeyLimits) -> None:
        self.name = name
        self.limits = limits
        # micro-USD (None: no budget); hard: a request is admitted only when its worst case fits.
        self.budget = None if limits.budget is None else round(limits.budget * 1_000_000)
        self.hard = limits.budget_mode == "hard"
        # The rate buckets (0: none): their size, seconds a unit, theoretical arrival time.
        self.rpm = limits.rpm or 0
        self.tpm = limits.tpm or 0
        self.requests_interval = WINDOW / self.rpm if self.rpm else 0.0
        self.tokens_interval = WINDOW / self.tpm if self.tpm else 0.0
        self.requests_tat = self.tokens_tat = 0.0
        self.lines = lines_template(limits)
        self.active = 0
        # The budget's current period, [start, end); none yet (the first request finds it).
        self.period_start = self.period_end = -math.inf
        # micro-USD: settled in the current period; reserved by requests still running.
        self.spent = 0
        self.reserved = 0


class Reservation(Protocol):
    """An admitted request's hold on its key's limits (in process, or shared)."""

    def settle(self, tokens: int, cost: int) -> None: ...
    def release(self) -> None: ...
    def head_lines(self) -> bytes: ...


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
        if state.tpm:
            # The tokens bucket corrected by what was used: given back, or charged unchecked.
            now = self.limiter.clock()
            tat = state.tokens_tat
            tat = (tat if tat > now else now) + (tokens - self.tokens) * state.tokens_interval
            state.tokens_tat = tat if tat > now else now
        state.reserved -= self.cost
        # Spend of a period that has ended no longer counts against the budget.
        if self.period_start == state.period_start:
            state.spent += cost

    def release(self) -> None:
        """The request ended without an answer: nothing used (else a no-op)."""
        if not self.settled:
            self.settle(0, 0)

    def head_lines(self) -> bytes:
        return self.limiter.head_lines(self.state, self.limiter.clock())


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
        budget = state.budget
        if budget is not None:
            if not state.period_start <= now < state.period_end:
                self._enter_period(state, now)
            committed = state.spent + state.reserved
            # soft: admitted while anything is left (overshoot <= one request's cost);
            # hard: only when its worst case fits.
            if committed + cost > budget if state.hard else committed >= budget:
                raise budget_error(state, budget, state.period_end)
        # Each bucket: admitted when its tat, moved by the amount (at most a full bucket's), stays
        # within a window of now; `over` is the wait. (Conditional expressions, not min/max:
        # those builtins parse keyword arguments per call.)
        rpm = state.rpm
        if rpm:
            tat = state.requests_tat
            base = tat if tat > now else now
            interval = state.requests_interval
            over = base + interval - now - WINDOW
            if over > 1e-9:
                raise self.limited(state, now, over, f"{rpm} requests per minute", "rpm")
            state.requests_tat = base + interval
        tpm = state.tpm
        if tpm:
            tat = state.tokens_tat
            base = tat if tat > now else now
            interval = state.tokens_interval
            moved = tokens * interval
            over = base + (moved if tokens < tpm else tpm * interval) - now - WINDOW
            if over > 1e-9:
                if rpm:
                    state.requests_tat = adjusted(state.requests_tat, -state.requests_interval, now)
                raise self.limited(state, now, over, f"{tpm} tokens per minute", "tpm")
            state.tokens_tat = base + moved
        state.active += 1
        state.reserved += cost
        return Ticket(self, state, tokens, cost)

    def seed(self, key: ApiKey, spent: int) -> None:
        """Start the key's current period with `spent` micro-USD (what the ledger holds)."""
        state = self._state(key)
        state.period_start, state.period_end = self.periods.bounds(key.limits.period, self.clock())
        state.spent = spent

    def spend(self, key: ApiKey, cost: int) -> None:
        """Count `cost` micro-USD settled on the shared store, for when this process falls back
        to its own limits."""
        state = self._state(key)
        now = self.clock()
        if not state.period_start <= now < state.period_end:
            self._enter_period(state, now)
        state.spent += cost

    def _state(self, key: ApiKey) -> KeyState:
        state = self._states.get(key.name)
        if state is None or (state.limits is not key.limits and state.limits != key.limits):
            state = self._states[key.name] = KeyState(key.name, key.limits)
        state.limits = key.limits  # equal: the same object next time, for the cheap test above
        return state

    def _enter_period(self, state: KeyState, now: float) -> None:
        """`now` is outside the period the key's budget counted last: find its own (the same one
        again after the clock stepped back within it); a new one starts with nothing spent."""
        start, end = self.periods.bounds(state.limits.period, now)
        if start != state.period_start:
            state.spent = 0
        state.period_start, state.period_end = start, end

    def limited(
        self, state: KeyState, now: float, wait: float, what: str, denial: str
    ) -> RateLimited:
        retry_after = min(max(math.ceil(wait), 1), MAX_RETRY_AFTER)
        headers = {
            name.decode(): value.decode()
            for name, value in header_pairs(self.head_lines(state, now))
        }
        return RateLimited(
            f"rate limit of key {state.name!r} exceeded: {what}; retry after {retry_after} s",
            retry_after,
            headers,
            denial,
        )

    def head_lines(self, state: KeyState, now: float) -> bytes:
        """Anthropic's `anthropic-ratelimit-*` headers for the key's own buckets, as the lines of
        an answer's head: per answer, only what is left and when it is full are formatted into
        the key's template (its names and limits). A bucket is full again at its tat (at now when
        it is full); what is left rounds down, less float dust."""
        rpm, tpm = state.rpm, state.tpm
        if rpm:
            tat = state.requests_tat
            if tat > now:
                left = rpm - math.ceil((tat - now) / state.requests_interval - 1e-6)
                requests = (left if left > 0 else 0, _RESETS[math.ceil(tat)])
            else:
                requests = (rpm, _RESETS[math.ceil(now)])
            if not tpm:
                return state.lines % requests
        if tpm:
            tat = state.tokens_tat
            if tat > now:
                left = tpm - math.ceil((tat - now) / state.tokens_interval - 1e-6)
                tokens = (left if left > 0 else 0, _RESETS[math.ceil(tat)])
            else:
                tokens = (tpm, _RESETS[math.ceil(now)])
            return state.lines % (requests + tokens if rpm else tokens)
        return b""


def adjusted(tat: float, change: float, now: float) -> float:
    """A bucket's tat corrected by `change` seconds (units * interval): given back (negative) or
    charged more (positive, without check); never before now."""
    tat = (tat if tat > now else now) + change
    return tat if tat > now else now


def lines_template(limits: KeyLimits) -> bytes:
    """A key's rate-limit header lines, its limits filled in: a bytes template taking, per bucket
    (requests, then tokens), what is left (%d) and when it is full again (%b)."""
    lines = b""
    for kind, limit in ((b"requests", limits.rpm), (b"tokens", limits.tpm)):
        if limit:
            lines += (
                b"anthropic-ratelimit-%s-limit: %d\r\nanthropic-ratelimit-%s-remaining: %%d\r\n"
                b"anthropic-ratelimit-%s-reset: %%b\r\n" % (kind, limit, kind, kind)
            )
    return lines


def header_pairs(lines: bytes) -> list[tuple[bytes, bytes]]:
    """Head lines as (name, value) pairs, for the answers and servers that take pairs."""
    return [
        (name, value) for name, _, value in (line.partition(b": ") for line in lines.splitlines())
    ]


def budget_error(state: KeyState, budget: int, end: float) -> BudgetExhausted:
    limits = state.limits
    per = f" per {limits.period}" if limits.period else ""
    resets = f"it resets at {iso_time(end)}" if end != math.inf else "it does not reset"
    used = (state.spent + state.reserved) / 1_000_000
    return BudgetExhausted(
        f"the budget of key {state.name!r} ({limits.budget:.2f} USD{per}) is spent "
        f"({used:.4f} USD used or reserved); {resets}"
    )


class _ResetTimes(dict[int, bytes]):
    """RFC 3339 text by second, formatted once: most answers of a busy second share their reset
    times, and a dict lookup costs a fraction of a Python call."""

    def __missing__(self, second: int) -> bytes:
        if len(self) >= 64:
            self.clear()
        text = self[second] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(second)).encode()
        return text


_RESETS = _ResetTimes()
