"""User functions for the `python:` scenario tests (tests/ is on the path)."""

from __future__ import annotations

import threading

from messagegate.routing.scenarios import ScenarioRequest

SEEN: list[ScenarioRequest] = []


def pick_by_key(request: ScenarioRequest) -> str | None:
    SEEN.append(request)
    return "cheap" if request.key == "alice" and request.input_tokens > 10 else None


def broken(request: ScenarioRequest) -> str | None:
    raise ValueError("the user's bug")


def junk(request: ScenarioRequest) -> object:
    return 42


async def unknown_model(request: ScenarioRequest) -> str | None:
    return "no-such-model"


RELEASE = threading.Event()


def stuck(request: ScenarioRequest) -> str | None:
    """Blocks until the test releases it: longer than any scenario's time limit."""
    RELEASE.wait(30)
    return "cheap"
