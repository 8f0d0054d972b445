"""The OpenAI-compatible path through the gateway, with the official SDK as the client."""

from __future__ import annotations

import asyncio
from typing import Any

import anthropic
import orjson
import pytest
from anthropic.types import MessageParam, ToolParam

from conftest import GATEWAY_KEY, PROVIDER_KEY, claude_code_fixture, claude_code_headers
from fakes import openai_script as oai
from fakes.gateway import build_config, running_gateway
from fakes.upstream import FakeUpstream, Reply
from helpers import envelope, first_text, openai_config, post, sse_events
from messagegate.translate import token_count
from messagegate.translate.token_count import count_request, count_text

HELLO: list[MessageParam] = [{"role": "user", "content": "Hello"}]
WEATHER_TOOL: ToolParam = {
    "name": "get_weather",
    "description": "Weather for a city",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}},
}
CALL = oai.tool_call("call_abc123", "get_weather", {"city": "Paris"})


def sdk_client(url: str) -> anthropic.AsyncAnthropic:
    return anthropic.AsyncAnthropic(base_url=url, api_key=GATEWAY_KEY, max_retries=0, timeout=20)


async def run_sdk(config: dict[str, Any], body: dict[str, Any], *, stream: bool) -> Any:
    """Send one request with the SDK; the final message (accumulated if streamed)."""
    async with running_gateway(build_config(config)) as (url, _):
        client = sdk_client(url)
        try:
            if not stream:
                return await client.messages.create(**body)
            async with client.messages.stream(**body) as events:
                return await events.get_final_message()
        finally:
            await client.close()


def text_and_tool_script(*, usage: bool = True) -> tuple[Reply, Reply]:
    whole = Reply(json=oai.completion("gpt-upstream-1", "Let me check.", [CALL]))
    chunks = Reply(chunks=oai.chunks("gpt-upstream-1", "Let me check.", [CALL], usage=usage))
    return whole, chunks


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
async def test_the_auth_switch_sends_the_key_as_x_api_key(
    upstream: FakeUpstream, stream: bool
) -> None:
    upstream.script(text_and_tool_script()[stream])
    body = {"model": "gpt-test", "max_tokens": 30, "messages": HELLO}
    message = await run_sdk(openai_config(upstream, auth="x-api-key"), body, stream=stream)
    headers = upstream.received[0].headers
    assert headers["x-api-key"] == PROVIDER_KEY
    assert "authorization" not in headers
    assert first_text(message) == "Let me check."


async def test_request_is_translated_and_answer_comes_back_as_anthropic(
    upstream: FakeUpstream,
) -> None:
    upstream.script(text_and_tool_script()[0])
    body = {
        "model": "gpt-test",
        "max_tokens": 300,
        "system": [{"type": "text", "text": "Be brief.", "cache_control": {"type": "ephemeral"}}],
        "messages": HELLO,
        "tools": [WEATHER_TOOL],
        "tool_choice": {"type": "any"},
        # This SDK version has no `temperature` argument any more; the API still takes it.
        "extra_body": {"temperature": 0.2},
        "stop_sequences": ["END"],
        "metadata": {"user_id": "user-42"},
    }
    message = await run_sdk(openai_config(upstream), body, stream=False)
    received = upstream.received[0]
    assert received.path == "/v1/chat/completions"
    assert received.headers["authorization"] == f"Bearer {PROVIDER_KEY}"
    assert "anthropic-version" not in received.headers
    assert "x-api-key" not in received.headers
    sent = received.json
    assert sent["model"] == "gpt-upstream-1"
    assert sent["messages"][0] == {"role": "system", "content": "Be brief."}
    assert sent["messages"][1]["role"] == "user"
    assert sent["tools"][0]["function"]["name"] == "get_weather"
    assert sent["tools"][0]["function"]["parameters"] == WEATHER_TOOL["input_schema"]
    assert sent["tool_choice"] == "required"
    assert sent["stop"] == ["END"]
    assert sent["temperature"] == 0.2
    assert sent["user"] == "user-42"
    assert sent["max_tokens"] == 300
    assert "cache_control" not in orjson.dumps(sent).decode()
    assert message.model == "gpt-test"
    assert message.id.startswith("msg_")
    assert [b.type for b in message.content] == ["text", "tool_use"]
    assert message.content[1].input == {"city": "Paris"}
    assert message.stop_reason == "tool_use"
    assert (message.usage.input_tokens, message.usage.output_tokens) == (11, 7)


async def test_stream_accumulates_to_the_non_stream_answer(
    upstream: FakeUpstream, second_upstream: FakeUpstream
) -> None:
    whole, chunks = text_and_tool_script()
    upstream.script(whole)
    second_upstream.script(chunks)
    body = {"model": "gpt-test", "max_tokens": 300, "messages": HELLO, "tools": [WEATHER_TOOL]}
    plain = await run_sdk(openai_config(upstream), body, stream=False)
    streamed = await run_sdk(openai_config(second_upstream), body, stream=True)
    assert second_upstream.received[0].json["stream_options"] == {"include_usage": True}
    ignore = {"id"}
    assert streamed.model_dump(exclude=ignore) == plain.model_dump(exclude=ignore)


async def test_stream_event_grammar_and_input_tokens_in_message_start(
    upstream: FakeUpstream,
) -> None:
    upstream.script(text_and_tool_script()[1])
    async with running_gateway(build_config(openai_config(upstream))) as (url, _):
        body = {
            "model": "gpt-test",
            "max_tokens": 50,
            "messages": HELLO,
            "stream": True,
        }
        status, headers, raw = await post(url, "/v1/messages", body)
    assert status == 200
    assert headers["content-type"].startswith("text/event-stream")
    events = sse_events(raw)
    assert [name for name, _ in events] == [
        "message_start",
        "content_block_start",
        "content_block_delta",
        "content_block_delta",
        "content_block_stop",
        "content_block_start",
        "content_block_delta",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    # Counted locally while the upstream answered: this upstream reports its usage only at the end.
    assert events[0][1]["message"]["usage"]["input_tokens"] == count_request(body) > 1
    assert [e[1]["index"] for e in events if e[0] == "content_block_start"] == [0, 1]
    assert events[-2][1]["usage"]["output_tokens"] == 7
    assert events[-2][1]["delta"]["stop_reason"] == "tool_use"


async def test_tool_only_answer_has_no_empty_text_block(upstream: FakeUpstream) -> None:
    upstream.script(Reply(chunks=oai.chunks("gpt-upstream-1", "", [CALL], usage=True)))
    body: dict[str, Any] = {
        "model": "gpt-test",
        "max_tokens": 50,
        "messages": HELLO,
        "tools": [WEATHER_TOOL],
    }
    message = await run_sdk(openai_config(upstream), body, stream=True)
    assert [b.type for b in message.content] == ["tool_use"]


async def test_foreign_tool_call_ids_are_rewritten_and_mapped_back(
    upstream: FakeUpstream,
) -> None:
    odd = oai.tool_call("functions.get_weather:0", "get_weather", {"city": "Oslo"})
    upstream.script(Reply(json=oai.completion("gpt-upstream-1", "", [odd])))
    upstream.script(Reply(json=oai.completion("gpt-upstream-1", "Sunny.", [])))
    body: dict[str, Any] = {
        "model": "gpt-test",
        "max_tokens": 50,
        "messages": HELLO,
        "tools": [WEATHER_TOOL],
    }
    async with running_gateway(build_config(openai_config(upstream))) as (url, _):
        client = sdk_client(url)
        first = await client.messages.create(**body)
        tool_use = first.content[0]
        assert tool_use.type == "tool_use"
        follow_up = [
            *HELLO,
            {"role": "assistant", "content": [tool_use.model_dump()]},
            {
                "role": "user",
                "content": [{"type": "tool_result", "tool_use_id": tool_use.id, "content": "18C"}],
            },
        ]
        second = await client.messages.create(**{**body, "messages": follow_up})
        await client.close()
    assert all(c.isalnum() or c in "_-" for c in tool_use.id)
    sent = upstream.received[1].json["messages"]
    assert sent[1]["tool_calls"][0]["id"] == "functions.get_weather:0"
    assert sent[2] == {"role": "tool", "tool_call_id": "functions.get_weather:0", "content": "18C"}
    assert first_text(second) == "Sunny."


async def test_claude_code_turns_replayed_through_an_openai_route(upstream: FakeUpstream) -> None:
    fixture = claude_code_fixture("messages_tool_result_turn")
    upstream.script(Reply(chunks=oai.chunks("gpt-upstream-1", "Done.", [], usage=True)))
    config = openai_config(upstream)
    config["models"][fixture["model"]] = {
        "routes": [{"provider": "oai", "model": "gpt-upstream-1", "max_output": 8192}]
    }
    headers = claude_code_headers("messages_tool_result_turn")
    async with running_gateway(build_config(config)) as (url, _):
        status, _, raw = await post(url, "/v1/messages?beta=true", fixture, headers=headers)
    assert status == 200
    events = sse_events(raw)
    assert events[-1][0] == "message_stop"
    received = upstream.received[0]
    sent = received.json
    text = orjson.dumps(sent).decode()
    assert "x-anthropic-billing-header" not in text
    assert "cache_control" not in text
    assert "anthropic-beta" not in received.headers
    assert sent["max_tokens"] == 8192
    assert len(sent["tools"]) == len(fixture["tools"])
    assert not {"thinking", "output_config", "context_management", "metadata"} & set(sent)
    roles = [m["role"] for m in sent["messages"]]
    assert "tool" in roles
    assert roles[0] == "system"


@pytest.mark.parametrize(
    ("status", "client_status", "error_type"),
    [
        (400, 400, "invalid_request_error"),
        (404, 404, "not_found_error"),
        (429, 429, "rate_limit_error"),
        (503, 529, "overloaded_error"),
    ],
)
async def test_upstream_errors_map_to_anthropic_errors(
    upstream: FakeUpstream, status: int, client_status: int, error_type: str
) -> None:
    reply = oai.error_reply(status, "upstream says no")
    reply.headers["retry-after"] = "3"
    upstream.default = reply
    async with running_gateway(build_config(openai_config(upstream))) as (url, _):
        body = {"model": "gpt-test", "max_tokens": 5, "messages": HELLO}
        got, headers, raw = await post(url, "/v1/messages", body)
    assert got == client_status
    kind, message = envelope(raw)
    assert kind == error_type
    if status in (400, 404):
        assert "upstream says no" in message
    if status == 429:
        assert headers["retry-after"] == "3"


async def test_provider_rejecting_the_gateway_key_is_a_502_that_hides_the_key(
    upstream: FakeUpstream,
) -> None:
    upstream.default = oai.error_reply(401, f"Incorrect API key provided: {PROVIDER_KEY}")
    async with running_gateway(build_config(openai_config(upstream))) as (url, _):
        body = {"model": "gpt-test", "max_tokens": 5, "messages": HELLO}
        status, headers, raw = await post(url, "/v1/messages", body)
    assert status == 502
    assert envelope(raw)[0] == "api_error"
    assert PROVIDER_KEY not in raw.decode()
    assert PROVIDER_KEY not in str(headers)


async def test_stream_without_finish_reason_ends_with_an_error_event(
    upstream: FakeUpstream,
) -> None:
    chunks = oai.chunks("gpt-upstream-1", "Half an answ", [], usage=False)
    upstream.script(Reply(chunks=chunks[:3]))
    async with running_gateway(build_config(openai_config(upstream))) as (url, _):
        body: dict[str, Any] = {
            "model": "gpt-test",
            "max_tokens": 50,
            "messages": HELLO,
            "stream": True,
        }
        status, _, raw = await post(url, "/v1/messages", body)
    assert status == 200
    names = [name for name, _ in sse_events(raw)]
    assert names[-1] == "error"
    assert "message_stop" not in names
    assert "message_delta" not in names


async def test_mid_stream_upstream_error_becomes_an_error_event(upstream: FakeUpstream) -> None:
    chunks = oai.chunks("gpt-upstream-1", "Some text", [], usage=False)
    error = b'data: {"error": {"message": "model crashed", "type": "server_error"}}\n\n'
    upstream.script(Reply(chunks=[*chunks[:2], error]))
    async with running_gateway(build_config(openai_config(upstream))) as (url, _):
        body: dict[str, Any] = {
            "model": "gpt-test",
            "max_tokens": 50,
            "messages": HELLO,
            "stream": True,
        }
        _, _, raw = await post(url, "/v1/messages", body)
    events = sse_events(raw)
    assert events[-1][0] == "error"
    assert "model crashed" in events[-1][1]["error"]["message"]


async def test_silent_upstream_gets_the_client_pings(upstream: FakeUpstream) -> None:
    release = asyncio.Event()
    chunks = oai.chunks("gpt-upstream-1", "Thinking done", [], usage=True)
    upstream.script(Reply(chunks=chunks, hold=release, hold_after=1))
    config = openai_config(upstream) | {"ping_interval": 0.05}
    async with running_gateway(build_config(config)) as (url, _):
        body: dict[str, Any] = {
            "model": "gpt-test",
            "max_tokens": 50,
            "messages": HELLO,
            "stream": True,
        }
        request = asyncio.create_task(post(url, "/v1/messages", body))
        for _ in range(200):
            if upstream.received:
                break
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.3)
        release.set()
        _, _, raw = await asyncio.wait_for(request, 10)
    names = [name for name, _ in sse_events(raw)]
    assert names[0] == "message_start"
    assert "ping" in names[: names.index("content_block_start") + 1]
    assert names[-1] == "message_stop"


async def test_no_usage_from_upstream_is_estimated_and_logged(
    upstream: FakeUpstream, caplog: pytest.LogCaptureFixture
) -> None:
    upstream.script(
        Reply(chunks=oai.chunks("gpt-upstream-1", "Hello there friend", [], usage=False))
    )
    caplog.set_level("INFO", logger="messagegate.access")
    async with running_gateway(build_config(openai_config(upstream))) as (url, _):
        body: dict[str, Any] = {
            "model": "gpt-test",
            "max_tokens": 50,
            "messages": HELLO,
            "stream": True,
        }
        _, _, raw = await post(url, "/v1/messages", body)
    delta = next(data for name, data in sse_events(raw) if name == "message_delta")
    assert delta["usage"]["output_tokens"] == count_text("Hello there friend")
    line = next(r.getMessage() for r in caplog.records if r.name == "messagegate.access")
    assert "(estimated)" in line


async def test_max_tokens_is_clamped_to_the_routes_max_output(upstream: FakeUpstream) -> None:
    upstream.script(Reply(json=oai.completion("gpt-upstream-1", "ok", [])))
    config = openai_config(upstream)
    config["models"]["gpt-test"]["routes"][0]["max_output"] = 4096
    await run_sdk(
        config, {"model": "gpt-test", "max_tokens": 64000, "messages": HELLO}, stream=False
    )
    assert upstream.received[0].json["max_tokens"] == 4096


async def test_presets_switch_the_quirks(upstream: FakeUpstream) -> None:
    upstream.script(Reply(chunks=oai.chunks("gpt-upstream-1", "ok", [], usage=True)))
    config = openai_config(upstream, preset="openai")
    body = {"model": "gpt-test", "max_tokens": 100, "messages": HELLO, "extra_body": {"top_k": 5}}
    await run_sdk(config, body, stream=True)
    sent = upstream.received[0].json
    assert sent["max_completion_tokens"] == 100
    assert "max_tokens" not in sent
    assert "top_k" not in sent


async def test_count_tokens_is_local_and_depends_on_tools(upstream: FakeUpstream) -> None:
    async with running_gateway(build_config(openai_config(upstream))) as (url, _):
        client = sdk_client(url)
        plain = await client.messages.count_tokens(model="gpt-test", messages=HELLO)
        with_tools = await client.beta.messages.count_tokens(
            model="gpt-test",
            messages=[{"role": "user", "content": "Hello"}],
            tools=[WEATHER_TOOL],
        )
        await client.close()
    assert upstream.received == []
    assert 0 < plain.input_tokens < with_tools.input_tokens


def openai_prompt_tokens(payload: dict[str, Any]) -> int:
    """What an OpenAI server bills as prompt_tokens for text messages (OpenAI's cookbook rule)."""
    total = 3
    for message in payload["messages"]:
        total += 3 + count_text(message["role"])
        content = message.get("content") or ""
        texts = [content] if isinstance(content, str) else [p.get("text", "") for p in content]
        total += sum(count_text(t) for t in texts)
    return total


async def test_local_count_tracks_the_upstreams_prompt_tokens(upstream: FakeUpstream) -> None:
    """Documented accuracy: within 15% of an OpenAI server's count for a tool-free conversation."""
    fixture = claude_code_fixture("messages_tool_result_turn")
    body = {k: v for k, v in fixture.items() if k not in ("tools",)}
    upstream.script(Reply(json=oai.completion("gpt-upstream-1", "ok", [])))
    config = openai_config(upstream)
    config["models"][fixture["model"]] = {"routes": [{"provider": "oai", "model": "gpt-4o"}]}
    body["stream"] = False
    async with running_gateway(build_config(config)) as (url, _):
        status, _, _ = await post(url, "/v1/messages", body)
    assert status == 200
    billed = openai_prompt_tokens(upstream.received[0].json)
    estimate = count_request(body)
    assert abs(estimate - billed) / billed < 0.15


async def test_the_input_is_counted_once_per_request_in_the_routes_encoding(
    upstream: FakeUpstream, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`max_context`, then the stream's `message_start`: one count, in the provider's encoding."""
    counted: list[str] = []
    real = token_count.count_request

    def counting(body: Any, encoding: str = "o200k_base") -> int:
        counted.append(encoding)
        return real(body, encoding)

    monkeypatch.setattr(token_count, "count_request", counting)
    upstream.default = Reply(chunks=oai.chunks("gpt-upstream-1", "hi", [], usage=False))
    config = openai_config(upstream, token_encoding="cl100k_base")
    config["models"]["gpt-test"]["routes"][0]["max_context"] = 100_000
    body = claude_code_fixture("messages_subagent_small_model") | {"model": "gpt-test"}
    async with running_gateway(build_config(config)) as (url, _):
        status, _, raw = await post(url, "/v1/messages", body | {"stream": True})
    assert status == 200, raw
    assert counted == ["cl100k_base"]
    start = next(data for event, data in sse_events(raw) if event == "message_start")
    assert start["message"]["usage"]["input_tokens"] == real(body, "cl100k_base")
