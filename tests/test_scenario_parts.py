"""The pieces of scenario routing on their own: the function runner, session memory, the tag,
the conditions over a view."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from conftest import claude_code_fixture
from messagegate.api.usage import Usage
from messagegate.config import ScenarioConditions
from messagegate.routing.model_tag import take_tag
from messagegate.routing.scenario_functions import FunctionBusy, FunctionRunner
from messagegate.routing.scenarios import RequestView, compile_conditions
from messagegate.routing.sessions import SessionMemory, reported_input, session_id
from messagegate.translate.token_count import count_request


def _join_scenario_threads() -> None:
    for thread in threading.enumerate():
        if thread.name == "messagegate-scenario":
            thread.join(timeout=10)
            assert not thread.is_alive()


async def test_a_plain_function_runs_off_the_loop_and_its_answer_comes_back() -> None:
    runner = FunctionRunner()
    assert await runner.call(lambda r: f"model-for-{r}", "x", 5) == "model-for-x"
    with pytest.raises(ZeroDivisionError):
        await runner.call(lambda r: 1 / 0, "x", 5)


async def test_an_async_function_is_awaited() -> None:
    async def pick(request: Any) -> str:
        return "async-model"

    assert await FunctionRunner().call(pick, None, 5) == "async-model"


async def test_a_stuck_function_times_out_and_holds_one_of_the_bounded_threads() -> None:
    release = threading.Event()
    runner = FunctionRunner(max_running=1)
    try:
        with pytest.raises(TimeoutError):
            await runner.call(lambda r: release.wait(10), None, 0.01)
        # Its thread still runs: the next call fails at once instead of starting another.
        with pytest.raises(FunctionBusy):
            await runner.call(lambda r: "m", None, 5)
    finally:
        release.set()
        _join_scenario_threads()
    assert await runner.call(lambda r: "m", None, 5) == "m"


def test_session_ids_in_both_forms_of_claude_codes_user_id() -> None:
    assert session_id(claude_code_fixture("messages_first_turn")) == (
        "00000000-0000-4000-8000-000000000000"
    )
    old = "user_5e1a_account_8c2d_session_4a3b-99"
    assert session_id({"metadata": {"user_id": old}}) == "4a3b-99"
    for junk in ({}, {"metadata": "x"}, {"metadata": {"user_id": "{not json"}}):
        assert session_id(junk) is None
    assert session_id({"metadata": {"user_id": "_session_" + "x" * 500}}) is None


def test_session_memory_keeps_the_most_recent_sessions_only() -> None:
    memory = SessionMemory(capacity=2)
    memory.remember("a", 1)
    memory.remember("b", 2)
    assert memory.last_input("a") == 1  # a is now the most recent
    memory.remember("c", 3)
    assert (memory.last_input("a"), memory.last_input("b"), memory.last_input("c")) == (1, None, 3)
    assert len(memory) == 2
    usage = Usage(input_tokens=5, cache_read_input_tokens=100, cache_creation_input_tokens=20)
    assert reported_input(usage) == 125


def test_the_tag_is_taken_from_the_system_prompt_or_the_first_user_turn_only() -> None:
    body: dict[str, Any] = {
        "system": "You explore.\n<messagegate-model> explorer </messagegate-model>\nGo.",
        "messages": [{"role": "user", "content": "hi"}],
    }
    assert take_tag(body) == "explorer"
    assert body["system"] == "You explore.\nGo."
    body = {
        "messages": [
            {
                "role": "user",
                "content": [{"type": "text", "text": "<messagegate-model>a</messagegate-model>"}],
            },
            {"role": "user", "content": "<messagegate-model>b</messagegate-model>"},
        ]
    }
    assert take_tag(body) == "a"
    assert body["messages"][0]["content"][0]["text"] == ""
    assert body["messages"][1]["content"] == "<messagegate-model>b</messagegate-model>"
    assert take_tag({"messages": [], "system": "<messagegate-model></messagegate-model>"}) is None


def _reasons(when: ScenarioConditions, body: dict[str, Any], **view: Any) -> list[str | None]:
    request = RequestView(body, view.pop("headers", {}), view.pop("key", None), **view)
    return [None if c.holds(request) else c.why(request) for c in compile_conditions(when)]


def test_each_condition_says_why_it_does_not_hold() -> None:
    body = claude_code_fixture("messages_first_turn")
    when = ScenarioConditions(
        model="claude-haiku-*",
        thinking="enabled",
        effort=("max",),
        tools_include=("web_search_*",),
        has_image=True,
        tag="explorer",
        header={"x-app": "web"},
        key="team-*",
        session_input_tokens_over=10,
        input_tokens_over=10**6,
    )
    assert _reasons(when, body) == [
        "key None does not match 'team-*'",
        "model 'claude-opus-4-8' does not match 'claude-haiku-*'",
        "header x-app None does not match 'web'",
        "thinking is adaptive, not enabled",
        "effort high is not one of ['max']",
        "no tool matches ['web_search_*']",
        "has_image is false",
        "tag is None, not 'explorer'",
        "session_input_tokens None is not over 10",
        f"input_tokens {count_request(body)} is not over 1000000",
    ]


def test_conditions_that_hold() -> None:
    body = claude_code_fixture("messages_first_turn")
    memory = SessionMemory()
    memory.remember("00000000-0000-4000-8000-000000000000", 50)
    when = ScenarioConditions(
        model="claude-*",
        thinking="adaptive",
        effort=("high", "max"),
        tools_include=("Web*",),
        has_image=False,
        tag="x",
        header={"x-app": "c?i"},
        key="alice",
        session_input_tokens_over=10,
        input_tokens_over=1000,
    )
    holds = _reasons(when, body, headers={"x-app": "cli"}, key="alice", tag="x", sessions=memory)
    assert holds == [None] * 10


def test_tools_include_sees_names_and_types_even_of_an_odd_tools_list() -> None:
    when = ScenarioConditions(tools_include=("web_search_*",))
    server = {"type": "web_search_20250305", "name": "web_search"}
    for tools in ([{"name": "Read"}, server], [{"name": "Read", "type": None}, server]):
        assert _reasons(when, {"tools": tools}) == [None]
    assert _reasons(when, {"tools": [{"name": "web_search"}, "junk"]}) == [
        "no tool matches ['web_search_*']"
    ]
