"""Scenario conditions: pure checks of a read-only view of a request, compiled once at startup.

A compiled scenario is a tuple of checks, cheapest first; each returns None when its condition
holds, or why it does not (what ``messagegate explain`` prints). Nothing here does I/O.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from fnmatch import translate
from types import MappingProxyType
from typing import Any

from messagegate.config import Scenario, ScenarioConditions
from messagegate.routing.sessions import SessionMemory, session_id
from messagegate.translate.token_count import count_request

Check = Callable[["RequestView"], str | None]
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
        self._tools: tuple[str, ...] | None = None
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
    def tools(self) -> tuple[str, ...]:
        """Every tool's name, and the type of each server tool (`web_search_20250305`)."""
        if self._tools is None:
            found: list[str] = []
            for tool in self.body.get("tools") or ():
                if isinstance(tool, dict):
                    for field in ("name", "type"):
                        value = tool.get(field)
                        if isinstance(value, str) and value != "custom":
                            found.append(value)
            self._tools = tuple(found)
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
        tools=view.tools,
        key=view.key,
        headers=MappingProxyType(
            {k: v for k, v in view.headers.items() if k not in _CREDENTIAL_HEADERS}
        ),
    )


class CompiledScenario:
    __slots__ = ("checks", "name", "scenario")

    def __init__(self, scenario: Scenario) -> None:
        self.scenario = scenario
        self.name = scenario.name
        self.checks = compile_conditions(scenario.when)

    def failure(self, view: RequestView) -> str | None:
        """Why the conditions do not hold, or None when they all do (the hot path)."""
        for check in self.checks:
            reason = check(view)
            if reason is not None:
                return reason
        return None

    def failures(self, view: RequestView) -> list[str]:
        """Every condition that does not hold (for ``messagegate explain``)."""
        return [reason for check in self.checks if (reason := check(view)) is not None]


def compile_conditions(when: ScenarioConditions) -> tuple[Check, ...]:
    """The checks of `when`, cheapest first: counting tokens comes last."""
    checks: list[Check | None] = [
        _glob_check("key", when.key, lambda v: v.key),
        _glob_check("model", when.model, lambda v: v.model),
        _header_check(when.header),
        _thinking_check(when.thinking),
        _budget_check(when.thinking_budget_over),
        _effort_check(when.effort),
        _tools_check(when.tools_include),
        _block_check("has_image", "image", when.has_image),
        _block_check("has_document", "document", when.has_document),
        _tag_check(when.tag),
        _over_check("session_input_tokens", when.session_input_tokens_over),
        _over_check("input_tokens", when.input_tokens_over),
    ]
    return tuple(check for check in checks if check is not None)


def glob(pattern: str) -> Callable[[str], re.Match[str] | None]:
    return re.compile(translate(pattern)).match


def _glob_check(
    label: str, pattern: str | None, value: Callable[[RequestView], str | None]
) -> Check | None:
    if pattern is None:
        return None
    matches = glob(pattern)

    def check(view: RequestView) -> str | None:
        actual = value(view)
        if actual is not None and matches(actual):
            return None
        return f"{label} {actual!r} does not match {pattern!r}"

    return check


def _header_check(headers: Mapping[str, str] | None) -> Check | None:
    if not headers:
        return None
    wanted = tuple((name, pattern, glob(pattern)) for name, pattern in headers.items())

    def check(view: RequestView) -> str | None:
        for name, pattern, matches in wanted:
            actual = view.headers.get(name)
            if actual is None or not matches(actual):
                return f"header {name} {actual!r} does not match {pattern!r}"
        return None

    return check


def _thinking_check(wanted: str | None) -> Check | None:
    if wanted is None:
        return None

    def check(view: RequestView) -> str | None:
        kind = view.thinking[0]
        return None if kind == wanted else f"thinking is {kind}, not {wanted}"

    return check


def _budget_check(limit: int | None) -> Check | None:
    if limit is None:
        return None

    def check(view: RequestView) -> str | None:
        kind, budget = view.thinking
        if kind == "enabled" and budget is not None and budget > limit:
            return None
        return f"thinking budget {budget} is not over {limit}"

    return check


def _effort_check(efforts: tuple[str, ...] | None) -> Check | None:
    if efforts is None:
        return None
    wanted = frozenset(efforts)

    def check(view: RequestView) -> str | None:
        effort = view.effort
        return None if effort in wanted else f"effort {effort} is not one of {list(efforts)}"

    return check


def _tools_check(patterns: tuple[str, ...] | None) -> Check | None:
    if patterns is None:
        return None
    matches = re.compile("|".join(f"(?:{translate(p)})" for p in patterns)).match

    def check(view: RequestView) -> str | None:
        if any(matches(tool) for tool in view.tools):
            return None
        return f"no tool matches {list(patterns)}"

    return check


def _block_check(label: str, block: str, wanted: bool | None) -> Check | None:
    if wanted is None:
        return None

    def check(view: RequestView) -> str | None:
        present = block in view.block_types
        return None if present == wanted else f"{label} is {str(present).lower()}"

    return check


def _tag_check(name: str | None) -> Check | None:
    if name is None:
        return None

    def check(view: RequestView) -> str | None:
        return None if view.tag == name else f"tag is {view.tag!r}, not {name!r}"

    return check


def _over_check(label: str, limit: int | None) -> Check | None:
    if limit is None:
        return None

    def check(view: RequestView) -> str | None:
        value: int | None = getattr(view, label)
        if value is not None and value > limit:
            return None
        return f"{label} {value} is not over {limit}"

    return check
