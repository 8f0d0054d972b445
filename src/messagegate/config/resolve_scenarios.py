"""`scenarios:` (gateway-wide and per key): conditions, targets and user functions, checked."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

from messagegate.config.context import Context
from messagegate.config.objects import Scenario, ScenarioConditions
from messagegate.config.problems import join
from messagegate.config.schema import ConditionsSpec, Names, ScenarioSpec

EFFORTS = frozenset({"low", "medium", "high", "max"})


def resolve_scenarios(
    ctx: Context, specs: list[ScenarioSpec] | None, path: str
) -> tuple[Scenario, ...]:
    scenarios = tuple(_scenario(ctx, spec, join(path, i)) for i, spec in enumerate(specs or ()))
    seen: set[str] = set()
    for i, scenario in enumerate(scenarios):
        if scenario.name in seen:
            raise ctx.fail(f"{path}.{i}.name", f"duplicate scenario name {scenario.name!r}")
        seen.add(scenario.name)
    return scenarios


def check_targets(
    ctx: Context, scenarios: tuple[Scenario, ...], path: str, known: Callable[[str], bool]
) -> None:
    """`use:` names a model the gateway serves: exact, alias, `provider/model` or pattern."""
    for i, scenario in enumerate(scenarios):
        if scenario.use is not None and not known(scenario.use):
            raise ctx.fail(f"{path}.{i}.use", f"unknown model {scenario.use!r}")


def _scenario(ctx: Context, spec: ScenarioSpec, path: str) -> Scenario:
    if (spec.use is None) == (spec.python is None):
        raise ctx.fail(path, "needs exactly one of use: (a model) or python: (a function)")
    if spec.when is None and spec.python is None:
        raise ctx.fail(join(path, "when"), "is required")
    return Scenario(
        name=spec.name,
        when=_conditions(ctx, spec.when or ConditionsSpec(), join(path, "when")),
        use=spec.use,
        python=spec.python,
        function=_function(ctx, spec.python, join(path, "python")) if spec.python else None,
        on_error=spec.on_error,
        timeout=spec.timeout,
    )


def _conditions(ctx: Context, spec: ConditionsSpec, path: str) -> ScenarioConditions:
    effort = _names(spec.effort)
    if effort is not None and not set(effort) <= EFFORTS:
        raise ctx.fail(join(path, "effort"), f"expected some of: {', '.join(sorted(EFFORTS))}")
    return ScenarioConditions(
        model=spec.model,
        thinking=spec.thinking,
        thinking_budget_over=spec.thinking_budget_over,
        effort=effort,
        input_tokens_over=spec.input_tokens_over,
        session_input_tokens_over=spec.session_input_tokens_over,
        tools_include=_names(spec.tools_include),
        has_image=spec.has_image,
        has_document=spec.has_document,
        tag=spec.tag,
        # Header names arrive lower-cased.
        header=None if spec.header is None else {k.lower(): v for k, v in spec.header.items()},
        key=spec.key,
    )


def _names(value: Names | None) -> tuple[str, ...] | None:
    if value is None:
        return None
    return (value,) if isinstance(value, str) else tuple(value)


def _function(ctx: Context, spec: str, path: str) -> Callable[..., Any]:
    module_name, sep, attribute = spec.partition(":")
    if not sep or not module_name or not attribute:
        raise ctx.fail(path, f"expected package.module:function, got {spec!r}")
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # the user's module may fail in any way while importing
        raise ctx.fail(path, f"cannot import {module_name}: {exc}") from None
    function = getattr(module, attribute, None)
    if not callable(function):
        raise ctx.fail(path, f"{module_name} has no function {attribute}")
    return function  # type: ignore[no-any-return]
