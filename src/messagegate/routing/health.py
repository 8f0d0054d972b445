"""Per-route health: a circuit breaker (an explicit state machine) and speed measurements."""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from messagegate.config import BreakerPolicy

EWMA_WEIGHT = 0.3


class Breaker(enum.Enum):
    CLOSED = "closed"
    OPEN = "open"
    # Half-open with its one probe out: the probe's lease holds the route until it ends.
    PROBING = "probing"


# Every transition the breaker may make; `RouteHealth._enter` refuses any other.
_TRANSITIONS: dict[Breaker, frozenset[Breaker]] = {
    Breaker.CLOSED: frozenset({Breaker.OPEN}),
    # OPEN -> CLOSED: a request admitted before the route opened, or tried in panic, succeeded.
    Breaker.OPEN: frozenset({Breaker.OPEN, Breaker.PROBING, Breaker.CLOSED}),
    Breaker.PROBING: frozenset({Breaker.OPEN, Breaker.CLOSED}),
}


class Admission(enum.Enum):
    """How a request may use a route: as usual, as its half-open probe, or not (it is open)."""

    CLOSED = "closed"
    PROBE = "probe"
    REFUSED = "refused"


# Module-level names for the members the hot path compares: on CPython 3.11 reading an enum
# member off its class costs ~4x a global lookup (measured: 266 vs 62 ns on this VM).
CLOSED, OPEN, PROBING = Breaker.CLOSED, Breaker.OPEN, Breaker.PROBING
ADMITTED, PROBE, REFUSED = Admission.CLOSED, Admission.PROBE, Admission.REFUSED


@dataclass(slots=True)
class RouteHealth:
    """Closed -> open after N failures in a row -> one probe after the cooldown -> closed or open.

    A probe holds a lease that `release` gives back however the probe ended (a non-retryable
    answer, a client that left, a cancellation): a route must never stay open for want of a probe.
    """

    breaker: Breaker = CLOSED
    consecutive_failures: int = 0
    opened_at: float | None = None
    probes: int = 0
    ttft: float | None = None
    tokens_per_second: float | None = None
    successes: int = 0
    failures: int = 0
    panic_attempts: int = 0
    last_panic_at: float | None = None

    def _enter(self, state: Breaker, now: float, *, restart_cooldown: bool = True) -> None:
        if state not in _TRANSITIONS[self.breaker]:
            raise AssertionError(f"breaker cannot go from {self.breaker} to {state}")
        if state is OPEN and restart_cooldown:
            self.opened_at = now
        elif state is CLOSED:
            self.opened_at = None
            self.consecutive_failures = 0
        self.breaker = state

    def state(self, now: float, policy: BreakerPolicy) -> str:
        """closed, open, half_open (the next request probes) or probing, as the routes show."""
        if self.breaker is OPEN and self.cooled_down(now, policy):
            return "half_open"
        return self.breaker.value

    def cooled_down(self, now: float, policy: BreakerPolicy) -> bool:
        return self.opened_at is not None and now - self.opened_at >= policy.cooldown

    def admit(self, now: float, policy: BreakerPolicy) -> Admission:
        """May a request use this route now? A cooled-down open route admits exactly one probe."""
        if self.breaker is CLOSED:
            return ADMITTED
        if self.breaker is OPEN and self.cooled_down(now, policy):
            self._enter(PROBING, now)
            self.probes += 1
            return PROBE
        return REFUSED

    def release(self, now: float) -> None:
        """A probe ended: without a verdict, the route stays cooled down and probes again next."""
        if self.breaker is PROBING:
            self._enter(OPEN, now, restart_cooldown=False)

    def panicked(self, now: float) -> None:
        """Tried although open, because every eligible route of the request was open."""
        self.panic_attempts += 1
        self.last_panic_at = now

    def succeeded(self, now: float) -> None:
        self.successes += 1
        self.consecutive_failures = 0
        if self.breaker is not CLOSED:
            self._enter(CLOSED, now)

    def failed(self, now: float, policy: BreakerPolicy) -> None:
        self.consecutive_failures += 1
        self.failures += 1
        # A failed probe or panic attempt starts a new cooldown.
        if self.breaker is not CLOSED or self.consecutive_failures >= policy.failures_to_open:
            self._enter(OPEN, now)

    def measured(self, ttft: float, output_tokens: int, generation_seconds: float) -> None:
        self.ttft = _ewma(self.ttft, ttft)
        if output_tokens > 0 and generation_seconds > 0:
            self.tokens_per_second = _ewma(
                self.tokens_per_second, output_tokens / generation_seconds
            )

    def expected_seconds(self, output_tokens: int) -> float | None:
        if self.ttft is None:
            return None
        if not self.tokens_per_second:
            return self.ttft
        return self.ttft + output_tokens / self.tokens_per_second


def _ewma(old: float | None, new: float) -> float:
    return new if old is None else old + EWMA_WEIGHT * (new - old)


class HealthBoard:
    """The health of every route, keyed by its label; the clock is injected for tests."""

    def __init__(self, policy: BreakerPolicy, clock: Callable[[], float]) -> None:
        self.policy = policy
        self.clock = clock
        self.routes: dict[str, RouteHealth] = {}

    def __getitem__(self, label: str) -> RouteHealth:
        health = self.routes.get(label)
        if health is None:
            health = self.routes[label] = RouteHealth()
        return health

    def describe(self, label: str) -> dict[str, Any]:
        health = self[label]
        now = self.clock()
        state = health.state(now, self.policy)
        cooldown_left = 0.0
        if state == "open" and health.opened_at is not None:
            cooldown_left = max(0.0, self.policy.cooldown - (now - health.opened_at))
        panic_ago = None if health.last_panic_at is None else round(now - health.last_panic_at, 3)
        return {
            "state": state,
            "consecutive_failures": health.consecutive_failures,
            "cooldown_remaining_seconds": round(cooldown_left, 3),
            "ttft_ms": None if health.ttft is None else round(health.ttft * 1000, 2),
            "output_tokens_per_second": health.tokens_per_second,
            "successes": health.successes,
            "failures": health.failures,
            "probes": health.probes,
            "panic_attempts": health.panic_attempts,
            "last_panic_seconds_ago": panic_ago,
        }
