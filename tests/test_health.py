"""The breaker's state machine, driven directly: however a probe ends, the route can recover."""

from __future__ import annotations

import pytest

from messagegate.config import BreakerPolicy
from messagegate.routing.health import Admission, Breaker, RouteHealth

POLICY = BreakerPolicy(failures_to_open=2, cooldown=30.0)


def opened(now: float = 100.0) -> RouteHealth:
    health = RouteHealth()
    for _ in range(POLICY.failures_to_open):
        health.failed(now, POLICY)
    return health


def breaker_of(health: RouteHealth) -> Breaker:
    # Read through a call: mypy would keep an `is` assert's narrowing across `failed()`.
    return health.breaker


def test_failures_in_a_row_open_the_route_and_a_success_in_between_resets_them() -> None:
    health = RouteHealth()
    health.failed(1.0, POLICY)
    health.succeeded(2.0)
    health.failed(3.0, POLICY)
    assert breaker_of(health) is Breaker.CLOSED
    health.failed(4.0, POLICY)
    assert breaker_of(health) is Breaker.OPEN
    assert health.state(4.0, POLICY) == "open"
    assert health.admit(33.9, POLICY) is Admission.REFUSED


def test_after_the_cooldown_exactly_one_probe_is_admitted() -> None:
    health = opened()
    assert health.state(130.0, POLICY) == "half_open"
    assert health.admit(130.0, POLICY) is Admission.PROBE
    assert health.state(130.0, POLICY) == "probing"
    assert health.admit(130.0, POLICY) is Admission.REFUSED
    assert health.probes == 1


def test_a_probe_that_succeeds_closes_the_route() -> None:
    health = opened()
    assert health.admit(130.0, POLICY) is Admission.PROBE
    health.succeeded(131.0)
    health.release(131.0)
    assert health.breaker is Breaker.CLOSED
    assert health.admit(131.0, POLICY) is Admission.CLOSED


def test_a_probe_that_fails_starts_a_new_cooldown() -> None:
    health = opened()
    assert health.admit(130.0, POLICY) is Admission.PROBE
    health.failed(131.0, POLICY)
    health.release(131.0)
    assert health.state(131.0, POLICY) == "open"
    assert health.admit(160.9, POLICY) is Admission.REFUSED
    assert health.admit(161.0, POLICY) is Admission.PROBE


def test_a_probe_without_a_verdict_gives_its_lease_back() -> None:
    """A non-retryable answer, a client that left, a cancellation: the next request probes."""
    health = opened()
    assert health.admit(130.0, POLICY) is Admission.PROBE
    health.release(135.0)
    assert health.state(135.0, POLICY) == "half_open"
    assert health.admit(135.0, POLICY) is Admission.PROBE


def test_releasing_a_lease_a_newer_verdict_settled_changes_nothing() -> None:
    health = opened()
    assert health.admit(130.0, POLICY) is Admission.PROBE
    health.succeeded(131.0)  # another request, admitted while closed, answered first
    health.release(132.0)
    assert health.breaker is Breaker.CLOSED


def test_attempts_in_panic_are_counted_and_their_verdict_counts() -> None:
    health = opened()
    health.panicked(101.0)
    health.failed(101.0, POLICY)
    assert health.opened_at == 101.0
    health.panicked(102.0)
    health.succeeded(102.0)
    assert health.breaker is Breaker.CLOSED
    assert (health.panic_attempts, health.last_panic_at) == (2, 102.0)


def test_the_breaker_refuses_a_transition_it_does_not_know() -> None:
    health = RouteHealth()
    with pytest.raises(AssertionError, match="cannot go"):
        health._enter(Breaker.PROBING, 1.0)
