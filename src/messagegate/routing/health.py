"""Per-route health: a circuit breaker and exponentially weighted speed measurements."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from messagegate.config import BreakerPolicy

EWMA_WEIGHT = 0.3


@dataclass(slots=True)
class RouteHealth:
    """Closed -> open after N consecutive failures -> half-open (one probe) after the cooldown."""

    consecutive_failures: int = 0
    opened_at: float | None = None
    probing: bool = False
    ttft: float | None = None
    tokens_per_second: float | None = None
    successes: int = 0
    failures: int = 0

    def state(self, now: float, policy: BreakerPolicy) -> str:
        if self.opened_at is None:
            return "closed"
        if now - self.opened_at >= policy.cooldown and not self.probing:
            return "half_open"
        return "open"

    def admit(self, now: float, policy: BreakerPolicy) -> bool:
        """May a request use this route now? A half-open route admits exactly one probe."""
        state = self.state(now, policy)
        if state == "half_open":
            self.probing = True
        return state != "open"

    def succeeded(self) -> None:
        self.consecutive_failures = 0
        self.opened_at = None
        self.probing = False
        self.successes += 1

    def failed(self, now: float, policy: BreakerPolicy) -> None:
        self.consecutive_failures += 1
        self.failures += 1
        if self.probing or self.consecutive_failures >= policy.failures_to_open:
            self.opened_at = now
        self.probing = False

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
        return {
            "state": state,
            "consecutive_failures": health.consecutive_failures,
            "cooldown_remaining_seconds": round(cooldown_left, 3),
            "ttft_ms": None if health.ttft is None else round(health.ttft * 1000, 2),
            "output_tokens_per_second": health.tokens_per_second,
            "successes": health.successes,
            "failures": health.failures,
        }
