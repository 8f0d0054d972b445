"""Scenario routing end to end, with the request bodies Claude Code really sends."""

from __future__ import annotations

import copy
import logging
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest

import fakes.anthropic_script as script
import scenario_hooks
from conftest import GATEWAY_KEY, PROVIDER_KEY, claude_code_fixture, claude_code_headers
from fakes.gateway import build_config, running_gateway
from fakes.upstream import FakeUpstream, Received, Reply
from helpers import envelope, post, sse_events
from messagegate.config import ConfigError
from messagegate.translate.token_count import count_request

OTHER_KEY = "mg-other-key-9876543210"
MAIN = "claude-opus-4-8"  # the main model name in the captured bodies
SMALL = "gw-small-model"  # the small/fast model name in the captured sub-agent body
WEB_SEARCH = {"type": "web_search_20250305", "name": "web_search", "max_uses": 5}


def _answer(received: Received) -> Reply:
    """Anthropic-native answers, streamed when asked, naming the upstream model they came from."""
    body = received.json
    usage = body.get("metadata", {}).get("reported_input", 11)
    msg = script.message([{"type": "text", "text": "ok"}], model=body["model"])
    msg["usage"]["input_tokens"] = usage
    return script.stream_reply(msg) if body.get("stream") else script.reply(msg)


@pytest.fixture
async def fleet() -> AsyncIterator[dict[str, FakeUpstream]]:
    """Two Anthropic-native providers: `us` and `eu` (region eu)."""
    fakes = {"us": FakeUpstream(), "eu": FakeUpstream()}
    for fake in fakes.values():
        await fake.start()
        fake.responder = _answer
    yield fakes
    for fake in fakes.values():
        await fake.stop()


def _config(fleet: dict[str, FakeUpstream], scenarios: list[Any], **extra: Any) -> Any:
    """`claude-opus-4-8` on us; `cheap`, `thinker`, `long`, `searcher`, `explorer` on eu."""
    models: dict[str, Any] = {MAIN: {"routes": [{"provider": "us", "model": "up-main"}]}}
    for name in ("cheap", "thinker", "long", "searcher", "explorer"):
        models[name] = {"routes": [{"provider": "eu", "model": f"up-{name}"}]}
    raw = {
        "keys": [
            {"key": GATEWAY_KEY, "name": "alice", "scenarios": extra.pop("alice", [])},
            {"key": OTHER_KEY, "name": "bob"},
        ],
        "providers": {
            name: {"kind": "anthropic", "base_url": fake.url, "api_key": PROVIDER_KEY}
            | ({"region": "eu"} if name == "eu" else {})
            for name, fake in fleet.items()
        },
        "models": models,
        "scenarios": scenarios,
        **extra,
    }
    return build_config(raw)


@asynccontextmanager
async def _gateway(fleet: dict[str, FakeUpstream], scenarios: list[Any], **extra: Any) -> Any:
    async with running_gateway(_config(fleet, scenarios, **extra)) as (url, _app):
        yield url


async def _send(url: str, body: dict[str, Any], key: str = GATEWAY_KEY) -> tuple[int, Any, bytes]:
    headers = claude_code_headers("messages_first_turn")
    return await post(url, "/v1/messages?beta=true", body, headers, key=key)


def _upstream_model(fleet: dict[str, FakeUpstream]) -> str:
    """The upstream model of the one request the fleet received."""
    received = [r for fake in fleet.values() for r in fake.received]
    assert len(received) == 1, [r.json["model"] for r in received]
    fleet["us"].received.clear()
    fleet["eu"].received.clear()
    return str(received[0].json["model"])


def _first_turn(**changes: Any) -> dict[str, Any]:
    body = claude_code_fixture("messages_first_turn") | {"stream": False}
    return body | changes


BACKGROUND = {"name": "background", "when": {"model": "gw-small-*"}, "use": "cheap"}
PLAN = {
    "name": "plan",
    "when": {"thinking": "enabled", "thinking_budget_over": 10000},
    "use": "thinker",
}
SEARCH = {"name": "search", "when": {"tools_include": ["web_search_*"]}, "use": "searcher"}


async def test_claude_codes_background_chore_goes_to_the_cheap_model_by_its_name(
    fleet: dict[str, FakeUpstream],
) -> None:
    async with _gateway(fleet, [PLAN, BACKGROUND]) as url:
        chore = claude_code_fixture("messages_subagent_small_model") | {"stream": True}
        status, headers, raw = await _send(url, chore)
        assert status == 200, raw
        assert headers["x-messagegate-scenario"] == "background"
        assert headers["x-messagegate-upstream-model"] == "up-cheap"
        assert _upstream_model(fleet) == "up-cheap"
        # The answer names the model the client asked for no more than fallbacks do: the
        # stream is relayed as the upstream sent it.
        assert [e for e, _ in sse_events(raw)][-1] == "message_stop"

        status, headers, raw = await _send(url, _first_turn())
        assert status == 200, raw
        assert "x-messagegate-scenario" not in headers
        assert _upstream_model(fleet) == "up-main"


async def test_a_plan_mode_turn_is_told_apart_from_claude_codes_usual_adaptive_thinking(
    fleet: dict[str, FakeUpstream],
) -> None:
    async with _gateway(fleet, [PLAN]) as url:
        # Every main turn carries adaptive thinking: that alone routes nowhere.
        assert _first_turn()["thinking"] == {"type": "adaptive"}
        status, headers, _ = await _send(url, _first_turn())
        assert (status, _upstream_model(fleet)) == (200, "up-main")
        assert "x-messagegate-scenario" not in headers

        planning = _first_turn(thinking={"type": "enabled", "budget_tokens": 31999})
        status, headers, _ = await _send(url, planning)
        assert (status, _upstream_model(fleet)) == (200, "up-thinker")
        assert headers["x-messagegate-scenario"] == "plan"

        small_budget = _first_turn(thinking={"type": "enabled", "budget_tokens": 4000})
        await _send(url, small_budget)
        assert _upstream_model(fleet) == "up-main"


async def test_effort_tells_a_think_hard_turn_apart(fleet: dict[str, FakeUpstream]) -> None:
    rule = {"name": "hard", "when": {"effort": ["max"]}, "use": "thinker"}
    async with _gateway(fleet, [rule]) as url:
        await _send(url, _first_turn())  # effort: high
        assert _upstream_model(fleet) == "up-main"
        await _send(url, _first_turn(output_config={"effort": "max"}))
        assert _upstream_model(fleet) == "up-thinker"


async def test_a_turn_padded_past_the_threshold_goes_to_the_long_context_model(
    fleet: dict[str, FakeUpstream],
) -> None:
    body = _first_turn()
    counted = count_request(body)
    rule = {"name": "long", "when": {"input_tokens_over": counted + 2000}, "use": "long"}
    async with _gateway(fleet, [rule]) as url:
        await _send(url, body)
        assert _upstream_model(fleet) == "up-main"
        padded = copy.deepcopy(body)
        padding = {"type": "text", "text": "The build log follows. " * 1000}
        padded["messages"][0]["content"].append(padding)
        assert count_request(padded) > counted + 2000
        status, headers, _ = await _send(url, padded)
        assert (status, _upstream_model(fleet)) == (200, "up-long")
        assert headers["x-messagegate-scenario"] == "long"


async def test_a_web_search_server_tool_goes_to_the_search_model(
    fleet: dict[str, FakeUpstream],
) -> None:
    async with _gateway(fleet, [SEARCH]) as url:
        # Claude Code's own `WebSearch` client tool is not the server tool.
        await _send(url, _first_turn())
        assert _upstream_model(fleet) == "up-main"
        searching = _first_turn()
        searching["tools"] = [*searching["tools"], WEB_SEARCH]
        status, headers, _ = await _send(url, searching)
        assert (status, _upstream_model(fleet)) == (200, "up-searcher")
        assert headers["x-messagegate-scenario"] == "search"


async def test_a_sub_agents_tag_pins_its_model_and_never_reaches_the_upstream(
    fleet: dict[str, FakeUpstream],
) -> None:
    rule = {"name": "explore", "when": {"tag": "explorer"}, "use": "explorer"}
    async with _gateway(fleet, [rule, BACKGROUND]) as url:
        body = claude_code_fixture("messages_subagent_small_model") | {"stream": False}
        definition = body["system"][2]["text"]
        body["system"][2]["text"] = "<messagegate-model>explorer</messagegate-model>\n" + definition
        status, headers, _ = await _send(url, body)
        assert status == 200
        assert headers["x-messagegate-scenario"] == "explore"
        [received] = fleet["eu"].received
        assert received.json["model"] == "up-explorer"
        assert "messagegate-model" not in received.body.decode()
        assert received.json["system"][2]["text"] == definition


async def test_the_first_matching_scenario_wins(fleet: dict[str, FakeUpstream]) -> None:
    both = _first_turn(thinking={"type": "enabled", "budget_tokens": 31999})
    both["tools"] = [*both["tools"], WEB_SEARCH]
    async with _gateway(fleet, [SEARCH, PLAN]) as url:
        _, headers, _ = await _send(url, both)
        assert (headers["x-messagegate-scenario"], _upstream_model(fleet)) == (
            "search",
            "up-searcher",
        )
    async with _gateway(fleet, [PLAN, SEARCH]) as url:
        _, headers, _ = await _send(url, both)
        assert (headers["x-messagegate-scenario"], _upstream_model(fleet)) == (
            "plan",
            "up-thinker",
        )


async def test_a_keys_own_scenarios_come_before_the_gateways(
    fleet: dict[str, FakeUpstream],
) -> None:
    everyone = {"name": "everyone", "when": {"model": "claude-*"}, "use": "long"}
    alices = {"name": "alices", "when": {"model": "claude-*"}, "use": "cheap"}
    async with _gateway(fleet, [everyone], alice=[alices]) as url:
        _, headers, _ = await _send(url, _first_turn())
        assert (headers["x-messagegate-scenario"], _upstream_model(fleet)) == ("alices", "up-cheap")
        _, headers, _ = await _send(url, _first_turn(), key=OTHER_KEY)
        assert (headers["x-messagegate-scenario"], _upstream_model(fleet)) == (
            "everyone",
            "up-long",
        )


async def test_header_and_key_conditions(fleet: dict[str, FakeUpstream]) -> None:
    rule = {
        "name": "cli-of-bob",
        "when": {"header": {"User-Agent": "claude-cli/*"}, "key": "b*"},
        "use": "cheap",
    }
    async with _gateway(fleet, [rule]) as url:
        await _send(url, _first_turn())
        assert _upstream_model(fleet) == "up-main"
        await _send(url, _first_turn(), key=OTHER_KEY)
        assert _upstream_model(fleet) == "up-cheap"


async def test_images_and_documents(fleet: dict[str, FakeUpstream]) -> None:
    rules = [
        {"name": "doc", "when": {"has_document": True}, "use": "long"},
        {"name": "img", "when": {"has_image": True}, "use": "cheap"},
    ]
    pixel = (
        "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5E"
        "rkJggg=="
    )
    image = {
        "type": "image",
        "source": {"type": "base64", "media_type": "image/png", "data": pixel},
    }
    async with _gateway(fleet, rules) as url:
        body = copy.deepcopy(_first_turn())
        body["messages"][0]["content"].append(image)
        _, headers, raw = await _send(url, body)
        assert headers["x-messagegate-scenario"] == "img", raw
        assert _upstream_model(fleet) == "up-cheap"
        # A PDF inside a tool result counts as a document.
        pdf = {"type": "base64", "media_type": "application/pdf", "data": "JVBERi0xLjQK"}
        result = {
            "type": "tool_result",
            "tool_use_id": "toolu_1",
            "content": [{"type": "document", "source": pdf}],
        }
        body["messages"].append(
            {
                "role": "assistant",
                "content": [{"type": "tool_use", "id": "toolu_1", "name": "Read", "input": {}}],
            }
        )
        body["messages"].append({"role": "user", "content": [result]})
        _, headers, raw = await _send(url, body)
        assert headers["x-messagegate-scenario"] == "doc", raw
        assert _upstream_model(fleet) == "up-long"


async def test_a_later_turn_of_a_session_that_reported_a_long_input(
    fleet: dict[str, FakeUpstream],
) -> None:
    rule = {"name": "big-session", "when": {"session_input_tokens_over": 100000}, "use": "long"}
    async with _gateway(fleet, [rule]) as url:
        turn = _first_turn()
        # The fake upstream reports what `metadata.reported_input` says (never sent by clients).
        await _send(url, turn | {"metadata": turn["metadata"] | {"reported_input": 150000}})
        assert _upstream_model(fleet) == "up-main"
        _, headers, _ = await _send(url, turn)
        assert (headers.get("x-messagegate-scenario"), _upstream_model(fleet)) == (
            "big-session",
            "up-long",
        )
        # Another session, in the older `…_session_<id>` form, is not affected.
        other = turn | {"metadata": {"user_id": "user_ab12_account__session_1234-5678"}}
        await _send(url, other)
        assert _upstream_model(fleet) == "up-main"


async def test_a_scenario_whose_target_the_filters_exclude_is_skipped(
    fleet: dict[str, FakeUpstream], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="messagegate.access")
    rules = [
        {"name": "to-eu", "when": {"model": "claude-*"}, "use": "cheap"},
        {"name": "eu-again", "when": {"model": "claude-*"}, "use": "long"},
    ]
    us_only = {"routing": {"allowed_providers": ["us"]}}
    async with _gateway(fleet, rules, routing_defaults=us_only["routing"]) as url:
        status, headers, raw = await _send(url, _first_turn())
        assert status == 200, raw
        assert "x-messagegate-scenario" not in headers
        assert _upstream_model(fleet) == "up-main"
        # The request's own filter lets the chosen model through again.
        await _send(url, _first_turn(allowed_providers=["eu"]))
        assert _upstream_model(fleet) == "up-cheap"
    lines = [r.getMessage() for r in caplog.records if r.name == "messagegate.access"]
    assert "scenario_skipped=to-eu: model 'cheap' is not allowed" in lines[0]
    assert "eu/up-cheap excluded by allowed_providers" in lines[0]
    assert re.search(r"\bscenario=to-eu\b", lines[1]), lines[1]
    assert "requested_model=claude-opus-4-8" in lines[1]


async def test_a_user_function_chooses_from_a_read_only_view(
    fleet: dict[str, FakeUpstream],
) -> None:
    rule = {"name": "mine", "python": "scenario_hooks:pick_by_key"}
    scenario_hooks.SEEN.clear()
    async with _gateway(fleet, [rule]) as url:
        _, headers, _ = await _send(url, _first_turn())
        assert (headers["x-messagegate-scenario"], _upstream_model(fleet)) == ("mine", "up-cheap")
        _, headers, _ = await _send(url, _first_turn(), key=OTHER_KEY)
        assert "x-messagegate-scenario" not in headers
        assert _upstream_model(fleet) == "up-main"
    seen = scenario_hooks.SEEN[0]
    assert (seen.model, seen.key, seen.thinking, seen.effort) == (MAIN, "alice", "adaptive", "high")
    assert seen.input_tokens == count_request(_first_turn())
    assert "WebSearch" in seen.tools
    assert seen.headers["user-agent"].startswith("claude-cli/")
    # The gateway key stays with the gateway.
    assert "x-api-key" not in seen.headers
    assert GATEWAY_KEY not in str(seen)
    with pytest.raises(TypeError):
        # A read-only mapping, which the test tries to write to on purpose.
        seen.headers["x-new"] = "1"  # type: ignore[index]


@pytest.mark.parametrize("function", ["broken", "junk", "unknown_model"])
async def test_a_failing_user_function_is_skipped_or_rejects_per_on_error(
    fleet: dict[str, FakeUpstream], function: str
) -> None:
    skip = {"name": "lenient", "python": f"scenario_hooks:{function}"}
    async with _gateway(fleet, [skip]) as url:
        status, headers, _ = await _send(url, _first_turn())
        assert (status, _upstream_model(fleet)) == (200, "up-main")
        assert "x-messagegate-scenario" not in headers
    reject = {"name": "strict", "python": f"scenario_hooks:{function}", "on_error": "reject"}
    async with _gateway(fleet, [reject]) as url:
        status, _, raw = await _send(url, _first_turn())
        assert status == 500
        error_type, message = envelope(raw)
        assert error_type == "api_error"
        assert "scenario 'strict' failed" in message
        assert "the user's bug" not in message
        assert not fleet["us"].received
        assert not fleet["eu"].received


async def test_an_error_answer_names_the_scenario_too(fleet: dict[str, FakeUpstream]) -> None:
    fleet["eu"].responder = lambda received: script.error_reply(
        400, "invalid_request_error", "max_tokens: too large for this model"
    )
    async with _gateway(fleet, [BACKGROUND]) as url:
        chore = claude_code_fixture("messages_subagent_small_model") | {"stream": True}
        status, headers, raw = await _send(url, chore)
        assert status == 400
        assert headers["x-messagegate-scenario"] == "background"
        assert envelope(raw) == ("invalid_request_error", "max_tokens: too large for this model")


async def test_count_tokens_goes_where_the_message_would(fleet: dict[str, FakeUpstream]) -> None:
    fleet["eu"].responder = lambda received: Reply(json={"input_tokens": 1234})
    async with _gateway(fleet, [BACKGROUND]) as url:
        body = claude_code_fixture("count_tokens_with_tools") | {"model": SMALL}
        status, headers, raw = await post(url, "/v1/messages/count_tokens?beta=true", body)
        assert (status, raw) == (200, b'{"input_tokens":1234}')
        assert headers["x-messagegate-scenario"] == "background"
        [received] = fleet["eu"].received
        assert received.path == "/v1/messages/count_tokens"
        assert received.json["model"] == "up-cheap"


async def test_a_user_function_over_its_time_limit(
    fleet: dict[str, FakeUpstream], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="messagegate.scenarios")
    rules = [
        {"name": "slow", "python": "scenario_hooks:stuck", "timeout": 0.05},
        {"name": "slow-strict", "python": "scenario_hooks:stuck", "timeout": 0.05}
        | {"on_error": "reject"},
    ]
    scenario_hooks.RELEASE.clear()
    try:
        async with _gateway(fleet, rules[:1]) as url:
            status, headers, _ = await _send(url, _first_turn())
            assert (status, _upstream_model(fleet)) == (200, "up-main")
            assert "x-messagegate-scenario" not in headers
        async with _gateway(fleet, rules[1:]) as url:
            status, _, raw = await _send(url, _first_turn())
            assert status == 500
            assert envelope(raw) == (
                "api_error",
                "scenario 'slow-strict' failed: took longer than 0.05s",
            )
    finally:
        scenario_hooks.RELEASE.set()
    warnings = [r.getMessage() for r in caplog.records if r.name == "messagegate.scenarios"]
    assert "scenario 'slow': took longer than 0.05s (on_error: skip)" in warnings


async def test_a_scenario_may_use_a_provider_model_name_an_alias_or_a_pattern(
    fleet: dict[str, FakeUpstream],
) -> None:
    scenarios = [
        {"name": "direct", "when": {"model": "direct-*"}, "use": "eu/up-direct"},
        {"name": "aliased", "when": {"model": "aliased-*"}, "use": "fast"},
        {"name": "patterned", "when": {"model": "patterned-*"}, "use": "loc-7b"},
    ]
    models = {
        MAIN: {"routes": [{"provider": "us", "model": "up-main"}]},
        "cheap": {"routes": [{"provider": "eu", "model": "up-cheap"}]},
        "loc-*": {"routes": [{"provider": "eu"}]},
    }
    async with _gateway(fleet, scenarios, aliases={"fast": "cheap"}, models=models) as url:
        for asked, scenario, upstream_model in [
            ("direct-1", "direct", "up-direct"),
            ("aliased-1", "aliased", "up-cheap"),
            ("patterned-1", "patterned", "loc-7b"),
        ]:
            status, headers, raw = await _send(url, _first_turn(model=asked))
            assert status == 200, raw
            assert headers["x-messagegate-scenario"] == scenario
            assert _upstream_model(fleet) == upstream_model


def test_a_scenario_target_nothing_serves_is_refused_at_start(
    fleet: dict[str, FakeUpstream],
) -> None:
    scenarios = [{"name": "nowhere", "when": {"model": "x-*"}, "use": "loc-7b"}]
    with pytest.raises(ConfigError, match=r"scenarios\.0\.use: unknown model 'loc-7b'"):
        _config(fleet, scenarios)


async def test_a_target_outside_the_keys_allow_list_is_skipped_and_its_name_is_checked_first(
    fleet: dict[str, FakeUpstream],
) -> None:
    scenarios = [
        {"name": "think", "when": {"model": "claude-*"}, "use": "thinker"},
        {"name": "cheap", "when": {"model": "claude-*"}, "use": "cheap"},
    ]
    alice = {"key": GATEWAY_KEY, "name": "alice", "models": ["claude-*", "cheap"]}
    async with _gateway(fleet, scenarios, keys=[alice]) as url:
        status, headers, body = await _send(url, _first_turn())
        assert status == 200, body
        assert headers["x-messagegate-scenario"] == "cheap"
        assert _upstream_model(fleet) == "up-cheap"
        status, _, body = await _send(url, _first_turn(model="thinker"))
    assert status == 403
    assert envelope(body) == ("permission_error", "this key may not use the model 'thinker'")
    assert [r for fake in fleet.values() for r in fake.received] == []
