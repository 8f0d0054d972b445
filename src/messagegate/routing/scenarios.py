"""Scenario conditions: pure checks of a read-only view of a request, compiled once at startup.

A compiled scenario is a tuple of checks, cheapest first; each returns None when its condition
holds, or why it does not (what ``messagegate explain`` prints). Nothing here does I/O.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from messagegate.config import Scenario, ScenarioConditions
from messagegate.routing.sessions import SessionMemory, session_id
from messagegate.translate.token_count import count_request

# A user's function never sees the client's gateway key.
_CREDENTIAL_HEADERS = frozenset({"x-api-key", "authorization"})


class RequestView:
    """What conditions read of one request; each trait is worked out once, when first asked."""

    __slots__ = (
        "_blocks",
        "_input_tokens",
        "_session_input",
        "_session_known",
        "_tools",
        "body",
        "headers",
        "key",
        "model",
        "sessions",
        "tag",
    )

    def __init__(
        self,
        body: Mapping[str, Any],
        headers: Mapping[str, str],
        key: str | None,
        *,
        tag: str | None = None,
        sessions: SessionMemory | None = None,
    ) -> None:
        self.body = body
        self.model: str = body.get("model") or ""
        self.headers = headers
        self.key = key
        self.tag = tag
        self.sessions = sessions
        self._input_tokens: int | None = None
        self._tools: str | None = None
        self._blocks: frozenset[str] | None = None
        self._session_input: int | None = None
        self._session_known = False

    @property
    def input_tokens(self) -> int:
        """The local count, the same one `max_context` is checked against."""
        if self._input_tokens is None:
            self._input_tokens = count_request(self.body)
        return self._input_tokens

    @property
    def counted_input_tokens(self) -> int | None:
        return self._input_tokens

    @property
    def thinking(self) -> tuple[str, int | None]:
        """("enabled" | "adaptive" | "off", budget_tokens)."""
        thinking = self.body.get("thinking")
        if not isinstance(thinking, dict):
            return "off", None
        kind = thinking.get("type")
        budget = thinking.get("budget_tokens")
        budget = budget if isinstance(budget, int) else None
        return ("off" if kind not in ("enabled", "adaptive") else kind), budget

    @property
    def effort(self) -> str | None:
        config = self.body.get("output_config")
        effort = config.get("effort") if isinstance(config, dict) else None
        return effort if isinstance(effort, str) else None

    @property
    def tools(self) -> str:
        """Every tool's name and type (`web_search_20250305`, `custom`), one per line (names
        hold no line break: tools_include searches them all in one go)."""
        if self._tools is None:
            tools = self.body.get("tools") or ()
            try:  # a validated request: every tool a mapping with a string name
                names = [tool["name"] for tool in tools]
                names += [tool["type"] for tool in tools if "type" in tool]
                self._tools = "\n".join(names)  # a null type: TypeError, the slow way
            except (KeyError, TypeError, AttributeError):
                self._tools = _tool_names(tools)
        return self._tools

    @property
    def block_types(self) -> frozenset[str]:
        """The content block types in the messages, tool results' contents included."""
        if self._blocks is None:
            types: set[str] = set()
            for message in self.body.get("messages") or ():
                content = message.get("content") if isinstance(message, dict) else None
                if isinstance(content, list):
                    _collect_types(content, types)
            self._blocks = frozenset(types)
        return self._blocks

    @property
    def session_input_tokens(self) -> int | None:
        """What the previous turn of this request's session reported as its input."""
        if not self._session_known:
            self._session_known = True
            session = session_id(self.body) if self.sessions is not None else None
            if session is not None and self.sessions is not None:
                self._session_input = self.sessions.last_input(session)
        return self._session_input


def _tool_names(tools: Any) -> str:
    """The names and types of a request that was not validated (``messagegate explain``)."""
    found = []
    for tool in tools if isinstance(tools, list) else ():
        for field in ("name", "type"):
            value = tool.get(field) if isinstance(tool, dict) else None
            if isinstance(value, str):
                found.append(value)
    return "\n".join(found)


def _collect_types(blocks: list[Any], types: set[str]) -> None:
    for block in blocks:
        if isinstance(block, dict):
            kind = block.get("type")
            if isinstance(kind, str):
                types.add(kind)
            inner = block.get("content")
            if kind == "tool_result" and isinstance(inner, list):
                _collect_types(inner, types)


@dataclass(frozen=True, slots=True)
class ScenarioRequest:
    """The read-only view a user's `python:` function gets."""

    model: str
    input_tokens: int
    thinking: str
    thinking_budget: int | None
    effort: str | None
    tools: tuple[str, ...]
    key: str | None
    headers: Mapping[str, str]


def function_request(view: RequestView) -> ScenarioRequest:
    thinking, budget = view.thinking
    return ScenarioRequest(
        model=view.model,
        input_tokens=view.input_tokens,
        thinking=thinking,
        thinking_budget=budget,
        effort=view.effort,
        tools=tuple(view.tools.split("\n")) if view.tools else (),
        key=view.key,
        headers=MappingProxyType(
            {k: v for k, v in view.headers.items() if k not in _CREDENTIAL_HEADERS}
        ),
    )


class CompiledScenario:
    __slots__ = ("conditions", "name", "scenario", "tests")

    def __init__(self, scenario: Scenario) -> None:
        self.scenario = scenario
        self.name = scenario.name
        self.conditions = compile_conditions(scenario.when)
        self.tests = tuple(condition.holds for condition in self.conditions)

    def matches(self, view: RequestView) -> bool:
        """Every condition holds (the hot path: no reasons are worded, no generator made)."""
        for holds in self.tests:  # noqa: SIM110
            if not holds(view):
                return False
        return True

    def failures(self, view: RequestView) -> list[str]:
        """Why each condition that does not hold does not (for ``messagegate explain``)."""
        return [c.why(view) for c in self.conditions if not c.holds(view)]


@dataclass(frozen=True, slots=True)
class Condition:
    holds: Callable[[RequestView], bool]
    why: Callable[[RequestView], str]


def compile_conditions(when: ScenarioConditions) -> tuple[Condition, ...]:
    """The conditions of `when`, cheapest first: counting tokens comes last."""
    conditions: list[Condition | None] = [
        _glob_condition("key", when.key, lambda v: v.key),
        _glob_condition("model", when.model, lambda v: v.model),
        _header_condition(when.header),
        _thinking_condition(when.thinking),
        _budget_condition(when.thinking_budget_over),
        _effort_condition(when.effort),
        _tools_condition(when.tools_include),
        _block_condition("has_image", "image", when.has_image),
        _block_condition("has_document", "document", when.has_document),
        _tag_condition(when.tag),
        _over_condition("session_input_tokens", when.session_input_tokens_over),
        _over_condition("input_tokens", when.input_tokens_over),
    ]
    return tuple(c for c in conditions if c is not None)


def glob_regex(pattern: str) -> str:
    """A glob (`*` any run, `?` one character, within one line) as a regular expression."""
    parts = (
        "[^\n]*" if char == "*" else "[^\n]" if char == "?" else re.escape(char) for char in pattern
    )
    return "".join(parts)


def glob(pattern: str) -> Callable[[str], re.Match[str] | None]:
    return re.compile(glob_regex(pattern) + r"\Z").match


def _glob_condition(
    label: str, pattern: str | None, value: Callable[[RequestView], str | None]
) -> Condition | None:
    if pattern is None:
        return None
    matches = glob(pattern)

    def holds(view: RequestView) -> bool:
        actual = value(view)
        return actual is not None and matches(actual) is not None

    return Condition(holds, lambda v: f"{label} {value(v)!r} does not match {pattern!r}")


def _header_condition(headers: Mapping[str, str] | None) -> Condition | None:
    if not headers:
        return None
    wanted = tuple((name, glob(pattern)) for name, pattern in headers.items())

    def holds(view: RequestView) -> bool:
        for name, matches in wanted:
            actual = view.headers.get(name)
            if actual is None or matches(actual) is None:
                return False
        return True

    def why(view: RequestView) -> str:
        return "; ".join(
            f"header {name} {view.headers.get(name)!r} does not match {pattern!r}"
            for name, pattern in headers.items()
            if not (view.headers.get(name) is not None and glob(pattern)(view.headers[name]))
        )

    return Condition(holds, why)


def _thinking_condition(wanted: str | None) -> Condition | None:
    if wanted is None:
        return None
    return Condition(
        lambda v: v.thinking[0] == wanted,
        lambda v: f"thinking is {v.thinking[0]}, not {wanted}",
    )


def _budget_condition(limit: int | None) -> Condition | None:
    if limit is None:
        return None

    def holds(view: RequestView) -> bool:
        kind, budget = view.thinking
        return kind == "enabled" and budget is not None and budget > limit

    return Condition(holds, lambda v: f"thinking budget {v.thinking[1]} is not over {limit}")


def _effort_condition(efforts: tuple[str, ...] | None) -> Condition | None:
    if efforts is None:
        return None
    wanted = frozenset(efforts)
    return Condition(
        lambda v: v.effort in wanted,
        lambda v: f"effort {v.effort} is not one of {list(efforts)}",
    )


def _tools_condition(patterns: tuple[str, ...] | None) -> Condition | None:
    if patterns is None:
        return None
    # One search over the names, one per line, instead of a match per tool.
    alternatives = "|".join(glob_regex(p) for p in patterns)
    search = re.compile(f"^(?:{alternatives})$", re.MULTILINE).search
    return Condition(
        lambda v: search(v.tools) is not None,
        lambda v: f"no tool matches {list(patterns)}",
    )


def _block_condition(label: str, block: str, wanted: bool | None) -> Condition | None:
    if wanted is None:
        return None
    return Condition(
        lambda v: (block in v.block_types) == wanted,
        lambda v: f"{label} is {str(block in v.block_types).lower()}",
    )


def _tag_condition(name: str | None) -> Condition | None:
    if name is None:
        return None
    return Condition(lambda v: v.tag == name, lambda v: f"tag is {v.tag!r}, not {name!r}")


def _over_condition(label: str, limit: int | None) -> Condition | None:
    if limit is None:
        return None

    def holds(view: RequestView) -> bool:
        value: int | None = getattr(view, label)
        return value is not None and value > limit

    return Condition(holds, lambda v: f"{label} {getattr(v, label)} is not over {limit}")
