"""Running a request over its eligible routes: retries, failover, model fallback, health records."""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

import stamina

from messagegate.api.usage import Usage
from messagegate.config import Capabilities, Config, FailoverPolicy, Model, Route
from messagegate.errors import (
    GatewayError,
    InvalidRequest,
    UpstreamError,
    UpstreamStatusError,
)
from messagegate.providers.base import Completion, EventStream, UpstreamCall, UpstreamClient
from messagegate.routing.capabilities import floor, needs_of, shortfall, within
from messagegate.routing.health import PROBE, REFUSED, HealthBoard
from messagegate.routing.names import ModelNames
from messagegate.routing.order import by_balance, by_config, by_cost, by_speed
from messagegate.routing.policy import RoutingSettings, exclusion
from messagegate.translate.token_count import InputCount

T = TypeVar("T")
Operation = Callable[[UpstreamClient, UpstreamCall], Awaitable[T]]

# Requests choose their own filters, so the cache of their plans is bounded.
_STATIC_PLANS_MAX = 4096
# Output length assumed when ordering by speed or cost (the real one is unknown in advance).
ASSUMED_OUTPUT_TOKENS = 1000
_ALL = RoutingSettings.resolve({"enable_model_fallback": True})


class AttemptObserver(Protocol):
    """Told of every failed upstream attempt and every route given up on (telemetry)."""

    def attempt_failed(self, route: Route, seconds: float, error: GatewayError) -> None: ...

    def route_failed(self, route: Route, breaker_open: bool) -> None: ...


class _Unobserved:
    def attempt_failed(self, route: Route, seconds: float, error: GatewayError) -> None:
        pass

    def route_failed(self, route: Route, breaker_open: bool) -> None:
        pass


class AttemptTracer(Protocol):
    def attempt(self, call: UpstreamCall, number: int) -> Mapping[str, str] | None:
        """An attempt starts: its trace headers (``traceparent``, ``tracestate``), if any."""

    def attempt_ended(
        self, call: UpstreamCall, number: int, error: GatewayError | None, value: object = None
    ) -> None: ...


@dataclass(frozen=True, slots=True)
class RouteRequest:
    model: Model
    body: Mapping[str, Any]
    headers: Mapping[str, str]
    settings: RoutingSettings
    beta: bool = False
    # The local input counts (a scenario may have counted already); None: made when needed.
    input_count: InputCount | None = None


@dataclass(slots=True)
class Routed(Generic[T]):
    """An answer and how it was reached."""

    value: T
    model: Model
    route: Route
    attempts: int
    skipped: list[str]
    started: float
    # When the first answer arrived: the whole body, or a stream's first event.
    answered: float = 0.0


class _Plan:
    """The routes one request will try, and what happened to them so far."""

    __slots__ = ("attempts", "candidates", "last_error", "skipped")

    def __init__(self, candidates: tuple[tuple[Model, Route], ...], skipped: list[str]) -> None:
        self.candidates = candidates
        self.skipped = skipped
        self.attempts = 0
        self.last_error: UpstreamError | None = None


class Router:
    def __init__(
        self,
        config: Config,
        clients: Mapping[str, UpstreamClient],
        board: HealthBoard,
        failover: FailoverPolicy,
        rng: random.Random | None = None,
        observer: AttemptObserver | None = None,
        tracer: AttemptTracer | None = None,
    ) -> None:
        self.config = config
        self.observer = observer or _Unobserved()
        self.tracer = tracer
        self.clients = clients
        self.board = board
        self.failover = failover
        self.rng = rng or random.Random()
        self._needs_count = any(
            r.max_context for m in (*config.models.values(), *config.patterns) for r in m.routes
        )
        self.names = ModelNames(config, self._forget)
        self._configured_labels = {r.label for m in config.models.values() for r in m.routes}
        # Plans that depend only on (model, settings), computed once.
        self._static_plans: dict[tuple[str, RoutingSettings], _Plan] = {}
        # Per model, what all its routes and its fallbacks' can take (filters only remove routes).
        self._floors = {name: self._floor(model) for name, model in config.models.items()}

    def model(self, name: str) -> Model:
        """The model a client's name stands for; 404 when nothing serves it."""
        return self.names.resolve(name)

    def _forget(self, model: Model) -> None:
        """A name made from a pattern was forgotten: so are its floor and the health of routes
        only it had."""
        self._floors.pop(model.name, None)
        for route in model.routes:
            if route.label not in self._configured_labels:
                self.board.routes.pop(route.label, None)

    async def complete(self, request: RouteRequest) -> Routed[Completion]:
        """A whole answer; its total time is what the speed measure learns from it."""
        routed = await self._run(request, lambda client, call: client.complete(call))
        self.board[routed.route.label].measured(routed.answered - routed.started, 0, 0.0)
        return routed

    async def open_stream(self, request: RouteRequest) -> Routed[EventStream]:
        return await self._run(request, lambda client, call: client.open_stream(call))

    async def count_tokens(self, request: RouteRequest) -> Routed[int]:
        return await self._run(request, lambda client, call: client.count_tokens(call))

    def record_stream(self, routed: Routed[Any], usage: Usage) -> None:
        """A stream ended: its time to first event and its output rate feed the speed measure."""
        generation = self.board.clock() - routed.answered
        health = self.board[routed.route.label]
        health.measured(routed.answered - routed.started, usage.output_tokens, generation)

    def record_failure(self, routed: Routed[Any]) -> None:
        """A stream failed after it started: too late to fail over, but the route's health knows."""
        self.board[routed.route.label].failed(self.board.clock(), self.board.policy)

    def snapshot(self) -> list[dict[str, Any]]:
        return [
            {"model": model.name, "provider": route.provider.name, "upstream_model": route.model}
            | self.board.describe(route.label)
            for model in (*self.config.models.values(), *self.names.made.values())
            for route in model.routes
        ]

    def refusal(self, model: Model, settings: RoutingSettings) -> str | None:
        """Why `settings` leave no route of `model` (its fallbacks included), or None."""
        reasons: list[str] = []
        for candidate in self._models_to_try(model, settings):
            for route in candidate.routes:
                reason = exclusion(route, settings, None)
                if reason is None:
                    return None
                reasons.append(f"{route.label} excluded by {reason}")
        return "; ".join(reasons)

    def plan(self, request: RouteRequest, counts: InputCount | None = None) -> _Plan:
        """Every eligible (model, route) in the order to try them; 400 if the filters leave none."""
        key = (request.model.name, request.settings)
        cached = self._static_plans.get(key)
        if cached is not None:
            plan = _Plan(cached.candidates, list(cached.skipped))
        else:
            plan = self._new_plan(request, counts or InputCount(request.body))
            if len(self._static_plans) < _STATIC_PLANS_MAX and self._is_static(request):
                self._static_plans[key] = plan
                plan = _Plan(plan.candidates, list(plan.skipped))
        least = self._floors.get(request.model.name)
        if least is None:
            # A name made from a pattern: kept as long as the name is (`_forget`).
            least = self._floors[request.model.name] = self._floor(request.model)
        if within(least, request.body):
            return plan
        return self._preflight(request, plan)

    def _floor(self, model: Model) -> Capabilities:
        return floor(r.capabilities for m in self._models_to_try(model, _ALL) for r in m.routes)

    def _preflight(self, request: RouteRequest, plan: _Plan) -> _Plan:
        """Skip the routes this request exceeds; 400 naming each one's shortfall if none is left."""
        # Images and PDFs are looked for only when a candidate route cannot take them.
        scan_media = any(
            not (r.capabilities.vision and r.capabilities.pdf) for _, r in plan.candidates
        )
        needs = needs_of(request.body, scan_media)
        shortfalls = [shortfall(route.capabilities, needs) for _, route in plan.candidates]
        if not any(shortfalls):
            return plan
        lacking = [
            f"{route.label}: {reason}"
            for (_, route), reason in zip(plan.candidates, shortfalls, strict=True)
            if reason is not None
        ]
        kept = tuple(
            candidate
            for candidate, reason in zip(plan.candidates, shortfalls, strict=True)
            if reason is None
        )
        if not kept:
            reasons = "; ".join([*plan.skipped, *lacking])
            raise InvalidRequest(
                f"no route of model {request.model.name!r} can serve this request: {reasons}"
            )
        plan.candidates = kept
        plan.skipped.extend(f"{reason} (skipped)" for reason in lacking)
        return plan

    def _is_static(self, request: RouteRequest) -> bool:
        """The same request settings always give the same plan: no counts, weights or speeds."""
        if self._needs_count or request.settings.preference is not None:
            return False
        models = self._models_to_try(request.model, request.settings)
        return all(len({r.priority for r in m.routes}) == len(m.routes) for m in models)

    def _new_plan(self, request: RouteRequest, counts: InputCount) -> _Plan:
        settings = request.settings
        candidates: list[tuple[Model, Route]] = []
        excluded: list[str] = []
        for model in self._models_to_try(request.model, settings):
            eligible = []
            for route in model.routes:
                # `max_context` holds the input as the route's own encoding counts it.
                input_tokens = None
                if route.max_context is not None:
                    input_tokens = counts(route.provider.token_encoding)
                reason = exclusion(route, settings, input_tokens)
                if reason is None:
                    eligible.append(route)
                else:
                    excluded.append(f"{route.label} ({model.name}) excluded by {reason}")
            ordered = self._order(eligible, settings, request, counts)
            candidates.extend((model, route) for route in ordered)
        if not candidates:
            raise InvalidRequest(_no_route_message(request, excluded, counts))
        return _Plan(tuple(candidates), excluded)

    def _models_to_try(self, model: Model, settings: RoutingSettings) -> list[Model]:
        models = [model]
        if settings.enable_model_fallback:
            for name in self._fallback_names(model):
                models.append(self.config.models[name])
        return models

    def _fallback_names(self, model: Model) -> list[str]:
        """Fallbacks in order, theirs after them, each model once."""
        seen = {model.name}
        order: list[str] = []
        queue = list(model.fallbacks)
        while queue:
            name = queue.pop(0)
            if name not in seen:
                seen.add(name)
                order.append(name)
                queue.extend(self.config.models[name].fallbacks)
        return order

    def _order(
        self,
        routes: Sequence[Route],
        settings: RoutingSettings,
        request: RouteRequest,
        counts: InputCount,
    ) -> list[Route]:
        output = min(int(request.body.get("max_tokens") or 0), ASSUMED_OUTPUT_TOKENS)
        output = output or ASSUMED_OUTPUT_TOKENS
        if settings.preference == "speed":
            return by_speed(routes, self.board, output)
        if settings.preference in ("cost", "balanced") and routes:
            # One count serves the comparison: routes are priced as the first one counts.
            encoding = routes[0].provider.token_encoding
            cached = counts.cached(encoding)
            input_tokens = (counts(encoding) - cached, cached)
            if settings.preference == "cost":
                return by_cost(routes, input_tokens, output)
            return by_balance(routes, self.board, input_tokens, output)
        return by_config(routes, self.rng)

    async def _run(self, request: RouteRequest, operation: Operation[T]) -> Routed[T]:
        counts = request.input_count or InputCount(request.body)
        plan = self.plan(request, counts)
        board, clock = self.board, self.board.clock
        queue: Sequence[tuple[Model, Route]] = plan.candidates
        refused: list[tuple[Model, Route]] = []
        panic = False
        # Traced, each attempt writes its trace headers into the calls' headers: a copy of them.
        headers = request.headers if self.tracer is None else dict(request.headers)
        # One loop, not a coroutine per route: this is the hot path of every request.
        while True:
            for model, route in queue:
                health = board[route.label]
                if panic:
                    health.panicked(clock())
                    admission = REFUSED
                else:
                    admission = health.admit(clock(), board.policy)
                    if admission is REFUSED:
                        refused.append((model, route))
                        plan.skipped.append(f"{route.label} skipped: cooling down after failures")
                        continue
                call = UpstreamCall(route, request.body, model.name, headers, request.beta, counts)
                started = clock()
                try:
                    value = await self._attempt(route, call, operation, plan)
                except UpstreamError as error:
                    self._failed(route, error, plan)
                    continue
                else:
                    answered = clock()
                    health.succeeded(answered)
                    return Routed(
                        value, model, route, plan.attempts, plan.skipped, started, answered
                    )
                finally:
                    # A probe that ended any other way (a 400, a client gone, a cancellation)
                    # gives its lease back, or the route would stay open for good.
                    if admission is PROBE:
                        health.release(clock())
            if panic or len(refused) < len(plan.candidates):
                raise self._exhausted(plan)
            # Panic, as Envoy's: the breaker opened every eligible route, and refusing them all
            # would turn an upstream's blip into the gateway's outage. The longest open goes first.
            queue = sorted(
                refused, key=lambda candidate: board[candidate[1].label].opened_at or 0.0
            )
            plan.skipped.append("every eligible route open: tried in panic")
            panic = True

    async def _attempt(
        self, route: Route, call: UpstreamCall, operation: Operation[T], plan: _Plan
    ) -> T:
        client = self.clients[route.provider.name]
        try:
            # Most requests succeed at once: only a failure pays for the retry machinery.
            return await self._once(client, call, operation, plan)
        except UpstreamError as error:
            if self.failover.attempts_per_route < 2 or self._backoff(error) is False:
                raise
            first_failure: UpstreamError | None = error
        policy = self.failover
        async for attempt in stamina.retry_context(
            on=self._backoff,
            attempts=policy.attempts_per_route,
            timeout=None,
            wait_initial=policy.backoff_initial,
            wait_max=policy.backoff_max,
            wait_jitter=policy.backoff_initial,
        ):
            with attempt:
                if first_failure is not None:
                    # stamina's first attempt is the one that already failed: it backs off as usual.
                    failed, first_failure = first_failure, None
                    raise failed
                return await self._once(client, call, operation, plan)
        raise AssertionError("stamina ended without an attempt")  # pragma: no cover

    async def _once(
        self, client: UpstreamClient, call: UpstreamCall, operation: Operation[T], plan: _Plan
    ) -> T:
        """One upstream attempt, reported to the observer (and the tracer)."""
        plan.attempts += 1
        started = self.board.clock()
        tracer = self.tracer
        if tracer is not None:
            trace = tracer.attempt(call, plan.attempts)
            if trace is not None:
                # The request's own copy (see `_run`): attempts are made one after the other.
                headers = call.headers
                assert isinstance(headers, dict)
                headers.update(trace)
        try:
            value = await operation(client, call)
        except UpstreamError as error:
            self.observer.attempt_failed(call.route, self.board.clock() - started, error)
            if tracer is not None:
                tracer.attempt_ended(call, plan.attempts, error)
            raise
        if tracer is not None:
            tracer.attempt_ended(call, plan.attempts, None, value)
        return value

    def _backoff(self, error: Exception) -> bool | float:
        """Retry the same route? A float is the wait the upstream asked for (retry-after)."""
        if not isinstance(error, UpstreamError) or not error.retryable:
            return False
        if isinstance(error, UpstreamStatusError):
            if error.rate_limited:
                return False
            wait = _seconds(error.retry_after)
            if wait is not None:
                return wait if wait <= self.failover.max_retry_after else False
        return True

    def _failed(self, route: Route, error: UpstreamError, plan: _Plan) -> None:
        if not error.retryable:
            raise error
        health = self.board[route.label]
        health.failed(self.board.clock(), self.board.policy)
        self.observer.route_failed(route, health.opened_at is not None)
        plan.skipped.append(f"{route.label} failed: {error.message}")
        plan.last_error = error

    def _exhausted(self, plan: _Plan) -> GatewayError:
        """The last upstream failure: every route left was tried, so there always is one."""
        error = plan.last_error
        if error is None:
            raise AssertionError("no route tried and none refused")  # pragma: no cover
        error.message = _with_summary(error.message, plan)
        return error


def _no_route_message(request: RouteRequest, excluded: list[str], counts: InputCount) -> str:
    """Why nothing is eligible; a context overflow is worded as Anthropic does, so that clients
    (Claude Code compacts its context on it) recognise it."""
    details = f"no route of model {request.model.name!r} is eligible: " + "; ".join(excluded)
    bounded = [r for r in request.model.routes if r.max_context is not None]
    if bounded:
        widest = max(bounded, key=lambda r: r.max_context or 0)
        input_tokens = counts(widest.provider.token_encoding)
        if widest.max_context is not None and input_tokens > widest.max_context:
            return (
                f"prompt is too long: {input_tokens} tokens > {widest.max_context} maximum "
                f"({details})"
            )
    return details


def _seconds(retry_after: str | None) -> float | None:
    if retry_after is None:
        return None
    try:
        return max(0.0, float(retry_after))
    except ValueError:
        return None


def _with_summary(message: str, plan: _Plan) -> str:
    if plan.attempts <= 1:
        return message
    return f"{message} (after {plan.attempts} attempts)"
