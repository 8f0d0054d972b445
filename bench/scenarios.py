"""The scenario matrix of issue 6: zero and realistic profiles, both routes, streaming or not."""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass

from bench.targets import ROUTES, Route

ZERO_CONCURRENCY = (1, 16, 64)
REALISTIC_CONCURRENCY = (1, 16, 64, 256)
MEMORY = "memory"
CAPACITY = "capacity"


@dataclass(frozen=True, slots=True)
class Scenario:
    profile: str
    stream: bool
    route: Route
    concurrency: int

    @property
    def name(self) -> str:
        kind = "stream" if self.stream else "json"
        return f"{self.profile}/{kind}/{self.route}/c{self.concurrency}"


def full_matrix() -> list[Scenario]:
    """Zero (pure overhead) first, then realistic; grouped so related rows sit together."""
    matrix = []
    for profile, levels in (("zero", ZERO_CONCURRENCY), ("realistic", REALISTIC_CONCURRENCY)):
        for stream in (False, True):
            for route in ROUTES:
                matrix += [Scenario(profile, stream, route, c) for c in levels]
    return matrix


def quick_matrix() -> list[Scenario]:
    return [Scenario("zero", stream, route, 16) for stream in (False, True) for route in ROUTES]


def select(matrix: list[Scenario], patterns: str | None) -> list[Scenario]:
    """Scenarios whose name matches any comma-separated glob, e.g. ``zero/*/openai/c64``."""
    if not patterns:
        return matrix
    globs = [p.strip() for p in patterns.split(",") if p.strip()]
    return [s for s in matrix if any(fnmatch.fnmatchcase(s.name, g) for g in globs)]


def wants(patterns: str | None, extra: str) -> bool:
    """Whether an extra part (``memory``, ``capacity``) is asked for; all are, without patterns."""
    return not patterns or any(p.strip() == extra for p in patterns.split(","))
