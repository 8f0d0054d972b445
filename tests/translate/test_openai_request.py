"""Anthropic Messages requests become the OpenAI Chat Completions request each dialect accepts."""

from __future__ import annotations

import json
import re
from dataclasses import replace
from pathlib import Path
from typing import Any

import orjson
import pytest

from messagegate.api.schema import parse_messages_request
from messagegate.config.dialect import PRESETS, OpenAIDialect
from messagegate.config.routing_fields import ROUTING_FIELDS
from messagegate.translate.openai_request import OpenAIRequest, to_openai_request
from messagegate.translate.tool_ids import client_tool_id

CLAUDE_CODE = Path(__file__).resolve().parents[1] / "fixtures" / "claude-code"
PLAIN = OpenAIDialect()
LEADING_ONLY = replace(PLAIN, system_messages="leading_only")
ALLOWED_KEYS = {
    "model",
    "messages",
    "max_tokens",
    "max_completion_tokens",
    "temperature",
    "top_p",
    "top_k",
    "stop",
    "user",
    "tools",
    "tool_choice",
    "parallel_tool_calls",
    "stream",
    "stream_options",
}


def claude_code(name: str) -> dict[str, Any]:
    body: dict[str, Any] = json.loads((CLAUDE_CODE / f"{name}.json").read_text())
    return body


def body_with(messages: list[dict[str, Any]], **fields: Any) -> dict[str, Any]:
    body = {"model": "claude-sonnet-4-5", "max_tokens": 1024, "messages": messages, **fields}
    parse_messages_request(body)  # the translator only ever sees validated bodies
    return body


def translate(body: dict[str, Any], dialect: OpenAIDialect = PLAIN, **kw: Any) -> OpenAIRequest:
    return to_openai_request(body, upstream_model="up-model", dialect=dialect, **kw)


def payload(body: dict[str, Any], dialect: OpenAIDialect = PLAIN, **kw: Any) -> dict[str, Any]:
    return translate(body, dialect, **kw).payload


def user(content: Any) -> dict[str, Any]:
    return {"role": "user", "content": content}


def assistant(content: Any) -> dict[str, Any]:
    return {"role": "assistant", "content": content}


def text(value: str, **extra: Any) -> dict[str, Any]:
    return {"type": "text", "text": value, **extra}


def tool_use(id_: str, name: str, input_: dict[str, Any]) -> dict[str, Any]:
    return {"type": "tool_use", "id": id_, "name": name, "input": input_}


def tool_result(id_: str, content: Any = None, **extra: Any) -> dict[str, Any]:
    return {"type": "tool_result", "tool_use_id": id_, "content": content, **extra}


PNG = {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}
WEATHER_TOOL = {
    "name": "get_weather",
    "description": "Weather for a city",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}},
}


# --- the captured Claude Code requests --------------------------------------------------------


def test_claude_code_first_turn() -> None:
    body = claude_code("messages_first_turn")
    request = translate(body, PRESETS["openai"], max_output=8192)
    out = request.payload
    dumped = orjson.dumps(out).decode()
    assert "x-anthropic-billing-header" not in dumped
    assert "cache_control" not in dumped
    assert set(out) <= ALLOWED_KEYS
    for gone in ("thinking", "output_config", "context_management", "metadata", "system"):
        assert gone not in out
    assert out["model"] == "up-model"
    assert out["max_completion_tokens"] == 8192  # clamped from 64000
    assert "max_tokens" not in out
    assert out["stream"] is True
    assert out["stream_options"] == {"include_usage": True}
    assert out["user"] == body["metadata"]["user_id"]
    messages = out["messages"]
    assert [m["role"] for m in messages] == ["system", "user", "system"]
    assert messages[0]["content"].startswith("You are a Claude agent")
    assert messages[1]["content"].endswith("List the files here.")
    assert messages[2]["content"] == body["messages"][1]["content"]
    assert len(out["tools"]) == 24
    for tool, original in zip(out["tools"], body["tools"], strict=True):
        assert tool["type"] == "function"
        assert tool["function"]["name"] == original["name"]
        assert tool["function"]["parameters"] == original["input_schema"]
    assert request.stop_sequences == ()


def test_claude_code_first_turn_without_clamp_keeps_max_tokens() -> None:
    out = payload(claude_code("messages_first_turn"))
    assert out["max_tokens"] == 64000


def test_claude_code_system_turn_is_folded_for_leading_only_providers() -> None:
    body = claude_code("messages_first_turn")
    messages = payload(body, PRESETS["mistral"])["messages"]
    assert [m["role"] for m in messages] == ["system", "user"]
    folded = messages[1]["content"]
    assert folded.startswith("<system-reminder>")
    assert folded.endswith(f"<system>\n{body['messages'][1]['content']}\n</system>")
    assert "stream_options" not in payload(body, PRESETS["mistral"])


def test_claude_code_tool_result_turn() -> None:
    body = claude_code("messages_tool_result_turn")
    messages = payload(body)["messages"]
    assert [m["role"] for m in messages] == ["system", "user", "system", "assistant", "tool"]
    call = messages[3]["tool_calls"][0]
    assert messages[3]["content"] == "I will use the Bash tool."
    assert call["id"] == "toolu_0456e38af23a5d5ccac5aeaf"
    assert call["function"] == {
        "name": "Bash",
        "arguments": '{"command":"ls -la","description":"List files"}',
    }
    assert messages[4]["tool_call_id"] == call["id"]
    assert messages[4]["content"].startswith("total 12\n")


def test_claude_code_tool_result_turn_for_mistral_uses_9_char_ids() -> None:
    messages = payload(claude_code("messages_tool_result_turn"), PRESETS["mistral"])["messages"]
    call_id = messages[-2]["tool_calls"][0]["id"]
    assert re.fullmatch(r"[a-zA-Z0-9]{9}", call_id)
    assert messages[-1] == {**messages[-1], "role": "tool", "tool_call_id": call_id}


def test_claude_code_subagent() -> None:
    body = claude_code("messages_subagent_small_model")
    out = payload(body, PRESETS["groq"], max_output=32768)
    assert len(out["tools"]) == 17
    assert out["max_completion_tokens"] == min(body["max_tokens"], 32768)
    assert "output_config" not in out


# --- system ---------------------------------------------------------------------------------


def test_system_string_is_a_leading_system_message() -> None:
    out = payload(body_with([user("hi")], system="Be brief."))
    assert out["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "hi"},
    ]


def test_system_blocks_are_joined_without_billing_header_and_cache_control() -> None:
    system = [
        text("x-anthropic-billing-header: cc_version=2.1; cc_entrypoint=cli;"),
        text("First.", cache_control={"type": "ephemeral"}),
        text(""),
        text("Second."),
    ]
    out = payload(body_with([user("hi")], system=system))
    assert out["messages"][0] == {"role": "system", "content": "First.\n\nSecond."}


def test_no_system_message_when_only_the_billing_header() -> None:
    system = [text("x-anthropic-billing-header: cc_version=2.1;")]
    out = payload(body_with([user("hi")], system=system))
    assert [m["role"] for m in out["messages"]] == ["user"]


def test_system_turns_stay_in_place_by_default() -> None:
    messages = [user("a"), assistant("b"), {"role": "system", "content": "c"}, user("d")]
    out = payload(body_with(messages))["messages"]
    assert [m["role"] for m in out] == ["user", "assistant", "system", "user"]


def test_leading_only_merges_leading_system_turns() -> None:
    messages = [{"role": "system", "content": [text("extra")]}, user("hi")]
    out = payload(body_with(messages, system="main"), LEADING_ONLY)["messages"]
    assert out == [
        {"role": "system", "content": "main\n\nextra"},
        {"role": "user", "content": "hi"},
    ]


def test_leading_only_folds_a_later_system_turn_into_the_next_user_message() -> None:
    messages = [user("a"), assistant("b"), {"role": "system", "content": "note"}, user("d")]
    out = payload(body_with(messages), LEADING_ONLY)["messages"]
    assert out[-1] == {"role": "user", "content": "<system>\nnote\n</system>\n\nd"}
    assert [m["role"] for m in out] == ["user", "assistant", "user"]


def test_leading_only_never_splits_tool_messages_from_their_call() -> None:
    messages = [
        user("go"),
        assistant([tool_use("t1", "Bash", {"command": "ls"})]),
        {"role": "system", "content": "note"},
        user([tool_result("t1", "out"), text("more")]),
    ]
    out = payload(body_with(messages), LEADING_ONLY)["messages"]
    assert [m["role"] for m in out] == ["user", "assistant", "tool", "user"]
    assert out[3]["content"] == "<system>\nnote\n</system>\n\nmore"


def test_leading_only_trailing_system_turn_after_assistant() -> None:
    messages = [user("a"), assistant("b"), {"role": "system", "content": "note"}]
    out = payload(body_with(messages), LEADING_ONLY)["messages"]
    assert out[-1] == {"role": "user", "content": "<system>\nnote\n</system>"}


def test_leading_only_folds_into_a_user_message_with_parts() -> None:
    messages = [
        user([text("look"), {"type": "image", "source": PNG}]),
        {"role": "system", "content": "s"},
    ]
    out = payload(body_with(messages), LEADING_ONLY)["messages"]
    assert out[-1]["content"][-1] == {"type": "text", "text": "<system>\ns\n</system>"}


# --- user content ----------------------------------------------------------------------------


def test_text_blocks_become_one_string_and_empty_text_is_skipped() -> None:
    out = payload(body_with([user([text("a"), text(""), text("b", cache_control={"type": "x"})])]))
    assert out["messages"] == [{"role": "user", "content": "a\n\nb"}]


def test_images_become_image_url_parts() -> None:
    url_source = {"type": "url", "url": "https://example.com/cat.jpg"}
    content = [
        text("what?"),
        {"type": "image", "source": PNG},
        {"type": "image", "source": url_source},
    ]
    parts = payload(body_with([user(content)]))["messages"][0]["content"]
    assert parts == [
        {"type": "text", "text": "what?"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
        {"type": "image_url", "image_url": {"url": "https://example.com/cat.jpg"}},
    ]


def test_text_documents_become_text() -> None:
    doc = {
        "type": "document",
        "title": "notes.txt",
        "source": {"type": "text", "media_type": "text/plain", "data": "hello"},
    }
    out = payload(body_with([user([doc])]))
    assert out["messages"][0]["content"] == "notes.txt\n\nhello"


def test_content_documents_become_text() -> None:
    doc = {"type": "document", "source": {"type": "content", "content": [text("a"), text("b")]}}
    assert payload(body_with([user([doc])]))["messages"][0]["content"] == "a\n\nb"


def test_pdf_documents_become_a_clear_placeholder() -> None:
    pdf = {"type": "base64", "media_type": "application/pdf", "data": "JVBERi0xLjQK"}
    doc = {"type": "document", "title": "report", "source": pdf}
    content = payload(body_with([user([doc, text("summarize")])]))["messages"][0]["content"]
    assert "JVBERi0" not in content
    assert content.startswith("[document 'report' (application/pdf) omitted:")
    assert content.endswith("summarize")


# --- assistant content -----------------------------------------------------------------------


def test_assistant_tool_use_becomes_tool_calls_with_compact_json() -> None:
    messages = [
        user("weather?"),
        assistant(
            [text("Checking."), tool_use("toolu_1", "get_weather", {"city": "Paris", "n": [1, 2]})]
        ),
        user([tool_result("toolu_1", "sunny")]),
    ]
    out = payload(body_with(messages, tools=[WEATHER_TOOL]))["messages"]
    assert out[1] == {
        "role": "assistant",
        "content": "Checking.",
        "tool_calls": [
            {
                "id": "toolu_1",
                "type": "function",
                "function": {"name": "get_weather", "arguments": '{"city":"Paris","n":[1,2]}'},
            }
        ],
    }


def test_tool_only_assistant_turn_has_null_content() -> None:
    messages = [user("go"), assistant([tool_use("t", "Bash", {})]), user([tool_result("t", "ok")])]
    out = payload(body_with(messages))["messages"]
    assert out[1]["content"] is None
    assert out[1]["tool_calls"][0]["function"]["arguments"] == "{}"


def test_encoded_tool_ids_go_back_to_the_upstream_original() -> None:
    client_id = client_tool_id("functions.Bash:0")
    messages = [
        user("go"),
        assistant([tool_use(client_id, "Bash", {})]),
        user([tool_result(client_id, "ok")]),
    ]
    out = payload(body_with(messages))["messages"]
    assert out[1]["tool_calls"][0]["id"] == "functions.Bash:0"
    assert out[2]["tool_call_id"] == "functions.Bash:0"


THINKING = {"type": "thinking", "thinking": "Let me think.", "signature": "mg0.abc"}
REDACTED = {"type": "redacted_thinking", "data": "EmwKAhgB"}


def test_thinking_is_dropped_by_default_and_never_sent_as_text() -> None:
    messages = [user("q"), assistant([THINKING, REDACTED, text("A.")]), user("more")]
    out = payload(body_with(messages))["messages"]
    assert out[1] == {"role": "assistant", "content": "A."}
    assert "Let me think" not in orjson.dumps(out).decode()


def test_thinking_only_turn_is_dropped_by_default() -> None:
    messages = [user("q"), assistant([THINKING]), user("more")]
    assert [m["role"] for m in payload(body_with(messages))["messages"]] == ["user", "user"]


@pytest.mark.parametrize("field", ["reasoning_content", "reasoning"])
def test_thinking_is_sent_as_reasoning_where_the_provider_wants_it(field: Any) -> None:
    dialect = replace(PLAIN, send_reasoning_as=field)
    messages = [
        user("q"),
        assistant([THINKING, REDACTED, tool_use("t", "Bash", {})]),
        user([tool_result("t", "x")]),
    ]
    out = payload(body_with(messages), dialect)["messages"]
    assert out[1][field] == "Let me think."
    assert out[1]["content"] is None
    assert "EmwKAhgB" not in orjson.dumps(out).decode()


def test_deepseek_preset_sends_reasoning_content() -> None:
    messages = [user("q"), assistant([THINKING, text("A")]), user("again")]
    out = payload(body_with(messages), PRESETS["deepseek"])["messages"]
    assert out[1] == {"role": "assistant", "content": "A", "reasoning_content": "Let me think."}


# --- tool results ----------------------------------------------------------------------------


def test_tool_results_come_before_the_remaining_user_text() -> None:
    messages = [
        user("go"),
        assistant([tool_use("a", "Bash", {}), tool_use("b", "Bash", {})]),
        user(
            [
                text("thanks"),
                tool_result("a", "one"),
                tool_result("b", [text("two"), text("lines")]),
            ]
        ),
    ]
    out = payload(body_with(messages))["messages"]
    assert out[2:] == [
        {"role": "tool", "tool_call_id": "a", "content": "one"},
        {"role": "tool", "tool_call_id": "b", "content": "two\n\nlines"},
        {"role": "user", "content": "thanks"},
    ]


def test_tool_result_errors_are_visible() -> None:
    messages = [
        user("go"),
        assistant([tool_use("a", "Bash", {})]),
        user([tool_result("a", "boom", is_error=True)]),
    ]
    out = payload(body_with(messages))["messages"]
    assert out[2]["content"] == "Error: boom"


def test_empty_tool_results_are_not_empty_strings() -> None:
    messages = [
        user("go"),
        assistant([tool_use("a", "Bash", {}), tool_use("b", "Bash", {})]),
        user([tool_result("a"), tool_result("b", "", is_error=True)]),
    ]
    out = payload(body_with(messages))["messages"]
    assert out[2]["content"] == "(no output)"
    assert out[3]["content"] == "Error"


def test_tool_result_images_follow_in_a_user_message() -> None:
    result = tool_result("a", [text("screenshot:"), {"type": "image", "source": PNG}])
    messages = [
        user("go"),
        assistant([tool_use("a", "Screenshot", {})]),
        user([result, text("now?")]),
    ]
    out = payload(body_with(messages))["messages"]
    assert out[2] == {"role": "tool", "tool_call_id": "a", "content": "screenshot:"}
    assert out[3]["role"] == "user"
    assert out[3]["content"] == [
        {"type": "text", "text": "[attachments returned by tool call a]"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
        {"type": "text", "text": "now?"},
    ]


def test_image_only_tool_result_points_at_the_attachment() -> None:
    result = tool_result("a", [{"type": "image", "source": PNG}])
    messages = [user("go"), assistant([tool_use("a", "Screenshot", {})]), user([result])]
    out = payload(body_with(messages))["messages"]
    assert out[2]["content"] == "(see the attachments in the next message)"
    assert out[3]["content"][1]["type"] == "image_url"


# --- tools and tool_choice -------------------------------------------------------------------


def test_tools_keep_their_schema_and_server_tools_are_dropped() -> None:
    tools = [
        WEATHER_TOOL,
        {
            "name": "no_description",
            "input_schema": {"type": "object"},
            "cache_control": {"type": "ephemeral"},
        },
        {"type": "web_search_20250305", "name": "web_search", "max_uses": 3},
        {"type": "custom", "name": "typed", "input_schema": {"type": "object"}},
    ]
    out = payload(body_with([user("hi")], tools=tools))
    assert out["tools"] == [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "description": "Weather for a city",
                "parameters": WEATHER_TOOL["input_schema"],
            },
        },
        {
            "type": "function",
            "function": {"name": "no_description", "parameters": {"type": "object"}},
        },
        {"type": "function", "function": {"name": "typed", "parameters": {"type": "object"}}},
    ]


def test_long_tool_names_are_shortened_and_mapped_back() -> None:
    long_name = "mcp__" + "server_" * 10 + "tool"
    tools = [{"name": long_name, "input_schema": {"type": "object"}}]
    messages = [
        user("go"),
        assistant([tool_use("a", long_name, {})]),
        user([tool_result("a", "ok")]),
    ]
    body = body_with(messages, tools=tools, tool_choice={"type": "tool", "name": long_name})
    request = translate(body)
    short = request.payload["tools"][0]["function"]["name"]
    assert len(short) <= 64
    assert request.payload["messages"][1]["tool_calls"][0]["function"]["name"] == short
    assert request.payload["tool_choice"] == {"type": "function", "function": {"name": short}}
    assert request.tool_names.client(short) == long_name


def test_only_server_tools_means_no_tools() -> None:
    tools = [{"type": "web_search_20250305", "name": "web_search"}]
    out = payload(body_with([user("hi")], tools=tools, tool_choice={"type": "auto"}))
    assert "tools" not in out
    assert "tool_choice" not in out


@pytest.mark.parametrize(
    ("choice", "expected"),
    [
        ({"type": "auto"}, "auto"),
        ({"type": "any"}, "required"),
        ({"type": "none"}, "none"),
        (
            {"type": "tool", "name": "get_weather"},
            {"type": "function", "function": {"name": "get_weather"}},
        ),
    ],
)
def test_tool_choice_mapping(choice: dict[str, Any], expected: Any) -> None:
    out = payload(body_with([user("hi")], tools=[WEATHER_TOOL], tool_choice=choice))
    assert out["tool_choice"] == expected
    assert "parallel_tool_calls" not in out


def test_tool_choice_is_dropped_without_tools() -> None:
    out = payload(body_with([user("hi")], tool_choice={"type": "any"}))
    assert "tool_choice" not in out
    assert "tools" not in out


def test_tool_choice_is_dropped_where_unsupported() -> None:
    dialect = replace(PLAIN, supports_tool_choice=False)
    out = payload(
        body_with([user("hi")], tools=[WEATHER_TOOL], tool_choice={"type": "any"}), dialect
    )
    assert "tool_choice" not in out
    assert out["tools"]


def test_disable_parallel_tool_use() -> None:
    choice = {"type": "auto", "disable_parallel_tool_use": True}
    body = body_with([user("hi")], tools=[WEATHER_TOOL], tool_choice=choice)
    assert payload(body)["parallel_tool_calls"] is False
    assert "parallel_tool_calls" not in payload(body, PRESETS["deepseek"])


# --- sampling and other fields ---------------------------------------------------------------


def test_sampling_fields() -> None:
    body = body_with(
        [user("hi")],
        temperature=0.2,
        top_p=0.9,
        top_k=40,
        stop_sequences=["###", "END"],
        metadata={"user_id": "u-1"},
    )
    request = translate(body)
    out = request.payload
    assert out["temperature"] == 0.2
    assert out["top_p"] == 0.9
    assert "top_k" not in out
    assert out["stop"] == ["###", "END"]
    assert out["user"] == "u-1"
    assert request.stop_sequences == ("###", "END")
    assert payload(body, PRESETS["vllm"])["top_k"] == 40


def test_max_tokens_field_and_clamp() -> None:
    body = body_with([user("hi")])
    assert payload(body)["max_tokens"] == 1024
    assert payload(body, max_output=512)["max_tokens"] == 512
    assert payload(body, max_output=4096)["max_tokens"] == 1024
    assert payload(body, PRESETS["openai"])["max_completion_tokens"] == 1024


def test_not_streaming_sends_no_stream_fields() -> None:
    out = payload(body_with([user("hi")]))
    assert "stream" not in out
    assert "stream_options" not in out


def test_routing_and_anthropic_only_fields_never_reach_the_upstream() -> None:
    anthropic_only = {
        "thinking": {"type": "enabled", "budget_tokens": 2000},
        "output_config": {"effort": "high"},
        "context_management": {"edits": []},
        "service_tier": "auto",
        "container": "container_1",
        "mcp_servers": [{"type": "url", "url": "https://mcp.example.com", "name": "x"}],
        "anthropic_beta": ["x"],
        "metadata": {"user_id": "u"},
    }
    routing = {"allowed_providers": ["a"], "eu_native": True, "preference": "cost"}
    body = body_with(
        [user([text("hi", cache_control={"type": "ephemeral"})])], **anthropic_only, **routing
    )
    out = payload(body)
    assert set(out) <= ALLOWED_KEYS
    assert not ROUTING_FIELDS & set(out)
    dumped = orjson.dumps(out).decode()
    for marker in ("cache_control", "budget_tokens", "container_1", "mcp.example.com", "eu_native"):
        assert marker not in dumped


def test_the_input_body_is_not_modified() -> None:
    body = claude_code("messages_tool_result_turn")
    before = orjson.dumps(body)
    translate(body, PRESETS["mistral"], max_output=100)
    assert orjson.dumps(body) == before


def test_user_is_not_sent_where_the_server_forbids_unknown_fields() -> None:
    body = {"model": "m", "max_tokens": 5, "messages": [], "metadata": {"user_id": "u-1"}}
    plain = to_openai_request(body, upstream_model="x", dialect=OpenAIDialect())
    mistral = to_openai_request(body, upstream_model="x", dialect=PRESETS["mistral"])
    assert plain.payload["user"] == "u-1"
    assert "user" not in mistral.payload
