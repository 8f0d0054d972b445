"""What ``messagegate check`` and ``messagegate explain`` say about scenarios, as text."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from messagegate.config import Config, Scenario
from messagegate.routing.health import HealthBoard
from messagegate.routing.policy import RoutingSettings
from messagegate.routing.router import Router
from messagegate.routing.scenario_choice import ScenarioChooser


def describe_scenarios(config: Config) -> list[str]:
    """One line per scenario, the key's lists after the gateway's."""
    lines = [f"  {_describe(s)}" for s in config.scenarios]
    for key in config.keys:
        lines.extend(f"  [key {key.name}] {_describe(s)}" for s in key.scenarios)
    return ["scenarios (first match wins; a key's own are tried first):", *lines] if lines else []


def _describe(scenario: Scenario) -> str:
    when = ", ".join(
        f"{name}={value if not isinstance(value, tuple) else list(value)}"
        for name in scenario.when.__dataclass_fields__
        if (value := getattr(scenario.when, name)) is not None
    )
    target = scenario.use or f"python {scenario.python} (on_error: {scenario.on_error})"
    return f"{scenario.name}: {when or 'always'} -> {target}"


async def explain(
    config: Config, body: dict[str, Any], key: str | None, headers: Mapping[str, str]
) -> str:
    """Which scenario a saved request body matches, and why each other one does not."""
    router = Router(config, {}, HealthBoard(config.breaker, time.monotonic), config.failover)
    chooser = ScenarioChooser(config, router)
    key_defaults = next((k.routing.values for k in config.keys if k.name == key), {})
    settings = RoutingSettings.resolve(body, key_defaults, config.routing_defaults.values)
    view = chooser.view(body, headers, key)
    thinking, budget = view.thinking
    lines = [
        f"request: model {view.model!r}, {view.input_tokens} input tokens (counted locally), "
        f"thinking {thinking}{f' (budget {budget})' if budget else ''}, effort {view.effort}, "
        f"{len(view.tools)} tool names/types, tag {view.tag!r}, key {key!r}",
    ]
    verdicts = await chooser.explain(view, settings)
    if not verdicts:
        return "\n".join([*lines, "no scenarios apply to this key"])
    lines.append("scenarios, in the order they are tried:")
    lines.extend(f"  {name}: {verdict}" for name, verdict in verdicts)
    winner = next((name for name, verdict in verdicts if verdict.startswith("MATCHES")), None)
    sent = view.model
    lines.append(
        f"result: scenario {winner!r} chooses the model"
        if winner
        else f"result: no scenario matches; the request goes to {sent!r} as sent"
    )
    return "\n".join(lines)
