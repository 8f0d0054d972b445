"""Which model serves a request: the first scenario (the key's list, then the gateway's) whose
conditions all hold and whose target the request's filters allow; none leaves the model sent."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from messagegate.api.usage import Usage
from messagegate.config import Config, Model, Scenario
from messagegate.errors import GatewayError, NotFound
from messagegate.routing.model_tag import take_tag
from messagegate.routing.policy import RoutingSettings
from messagegate.routing.router import Router
from messagegate.routing.scenario_functions import FunctionBusy, FunctionRunner
from messagegate.routing.scenarios import CompiledScenario, RequestView, function_request
from messagegate.routing.sessions import SessionMemory, reported_input, session_id

log = logging.getLogger("messagegate.scenarios")

Rules = tuple[CompiledScenario, ...]


@dataclass(slots=True)
class Choice:
    model: Model
    scenario: str | None
    # "scenario: why" of each scenario that matched but could not be used.
    skipped: list[str]
    input_tokens: int | None


class ScenarioChooser:
    def __init__(self, config: Config, router: Router) -> None:
        self.router = router
        self.runner = FunctionRunner()
        shared: Rules = tuple(CompiledScenario(s) for s in config.scenarios)
        self._rules: dict[str | None, Rules] = {None: shared}
        for key in config.keys:
            self._rules[key.name] = tuple(CompiledScenario(s) for s in key.scenarios) + shared
        every = all_scenarios(config)
        self.takes_tags = any(s.when.tag is not None for s in every)
        wants_sessions = any(s.when.session_input_tokens_over is not None for s in every)
        self.sessions = SessionMemory() if wants_sessions else None

    def rules(self, key: str | None) -> Rules:
        return self._rules.get(key) or self._rules[None]

    def view(
        self, body: dict[str, Any], headers: Mapping[str, str], key: str | None
    ) -> RequestView:
        """The request's view; a model tag, when scenarios look for one, leaves the body here."""
        tag = take_tag(body) if self.takes_tags else None
        return RequestView(body, headers, key, tag=tag, sessions=self.sessions)

    async def choose(
        self,
        body: dict[str, Any],
        headers: Mapping[str, str],
        key: str | None,
        settings: RoutingSettings,
        allows: Callable[[str], bool] | None = None,
    ) -> Choice:
        """The first matching scenario whose target is usable; `allows` is the key's model
        allow-list (a target outside it is skipped, as one the filters exclude)."""
        view = self.view(body, headers, key)
        skipped: list[str] = []
        for rule in self.rules(key):
            if not rule.matches(view):
                continue
            target = rule.scenario.use
            if rule.scenario.function is not None:
                target = await self._ask(rule.scenario, view)
            if target is None:
                continue
            if allows is not None and not allows(target):
                skipped.append(f"{rule.name}: the key may not use {target!r}")
                continue
            model, reason = self._usable(target, settings)
            if model is not None:
                return Choice(model, rule.name, skipped, view.counted_input_tokens)
            skipped.append(f"{rule.name}: {reason}")
        return Choice(self.router.model(view.model), None, skipped, view.counted_input_tokens)

    async def explain(self, view: RequestView, settings: RoutingSettings) -> list[tuple[str, str]]:
        """(scenario, verdict) of every scenario in the order they are tried."""
        verdicts: list[tuple[str, str]] = []
        chosen = False
        for rule in self.rules(view.key):
            failures = rule.failures(view)
            if failures:
                verdicts.append((rule.name, "no: " + "; ".join(failures)))
                continue
            target, problem = rule.scenario.use, None
            if rule.scenario.function is not None:
                target, problem = await self._answer(rule.scenario, view)
            if problem is not None:
                outcome = "rejects the request (500)" if rule.scenario.on_error == "reject" else ""
                verdicts.append((rule.name, f"failed: {problem}; {outcome or 'skipped'}"))
                if outcome and not chosen:
                    break
                continue
            if target is None:
                verdicts.append((rule.name, "no: its function answered None"))
                continue
            model, reason = self._usable(target, settings)
            if model is None:
                verdicts.append((rule.name, f"skipped: {reason}"))
            elif chosen:
                verdicts.append((rule.name, f"would match ({target}), but an earlier one won"))
            else:
                chosen = True
                verdicts.append((rule.name, f"MATCHES: the request goes to {target}"))
        return verdicts

    def remember(self, body: Mapping[str, Any], usage: Usage) -> None:
        """An answered turn: what it reported as input is what its session's next turn sees."""
        if self.sessions is None:
            return
        session = session_id(body)
        if session is not None:
            self.sessions.remember(session, reported_input(usage))

    def _usable(self, target: str, settings: RoutingSettings) -> tuple[Model | None, str]:
        try:
            model = self.router.model(target)
        except NotFound:
            return None, f"unknown model {target!r}"
        reason = self.router.refusal(model, settings)
        if reason is not None:
            return None, f"model {target!r} is not allowed: {reason}"
        return model, ""

    async def _ask(self, scenario: Scenario, view: RequestView) -> str | None:
        """The model the scenario's function answers; its failure per `on_error`."""
        target, problem = await self._answer(scenario, view)
        if problem is None:
            return target
        log.warning("scenario %r: %s (on_error: %s)", scenario.name, problem, scenario.on_error)
        if scenario.on_error == "reject":
            raise GatewayError(f"scenario {scenario.name!r} failed: {problem}")
        return None

    async def _answer(self, scenario: Scenario, view: RequestView) -> tuple[str | None, str | None]:
        """(the model the function named or None, what went wrong or None)."""
        assert scenario.function is not None
        try:
            answer = await self.runner.call(
                scenario.function, function_request(view), scenario.timeout
            )
        except TimeoutError:
            return None, f"took longer than {scenario.timeout}s"
        except FunctionBusy:
            return None, "too many earlier calls are still running"
        except Exception as exc:  # whatever the user's function raised
            log.warning("scenario %r: its function raised", scenario.name, exc_info=exc)
            return None, f"its function raised {type(exc).__name__}"
        problem = _junk(answer, self.router)
        return (None, problem) if problem is not None else (answer, None)  # type: ignore[return-value]


def _junk(answer: object, router: Router) -> str | None:
    """What is wrong with a function's answer, or None for a model name or None."""
    if answer is None:
        return None
    if not isinstance(answer, str):
        return f"its function returned {type(answer).__name__}, not a model name or None"
    try:
        router.model(answer)
    except NotFound:
        return f"its function returned an unknown model {answer[:100]!r}"
    return None


def all_scenarios(config: Config) -> list[Scenario]:
    return [*config.scenarios, *(s for key in config.keys for s in key.scenarios)]
