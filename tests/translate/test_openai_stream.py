"""Recorded-style OpenAI chunk streams become exactly the Anthropic event grammar."""

from __future__ import annotations

import itertools
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from messagegate.api.sse import Event, encode_event
from messagegate.translate import openai_stream
from messagegate.translate.openai_request import OpenAIRequest
from messagegate.translate.openai_response import to_anthropic_message
from messagegate.translate.openai_stream import OpenAIStreamTranslator
from messagegate.translate.signatures import is_gateway_signature
from messagegate.translate.token_count import count_text
from messagegate.translate.tool_ids import ToolNames, original_tool_id

FIXTURES = Path(__file__).parent.parent / "fixtures" / "openai"
REQUEST = OpenAIRequest(payload={}, tool_names=ToolNames())
CLIENT_ID = re.compile(r"^[a-zA-Z0-9_-]+$")
MODEL = "claude-sonnet-4-5"


# --- an SDK-like accumulator that checks the grammar as it goes ---------------------------------


@dataclass
class Accumulator:
    """Builds the message from events the way the anthropic SDK does; asserts the grammar."""

    message: dict[str, Any] | None = None
    open_index: int | None = None
    json_text: dict[int, str] = field(default_factory=dict)
    finished: bool = False
    error: dict[str, Any] | None = None

    def apply(self, event: Event) -> None:
        name, data = event
        assert data["type"] == name
        assert not self.finished, f"{name} after message_stop"
        assert self.error is None, f"{name} after an error event"
        if name == "error":
            self.error = data["error"]
            return
        if name == "message_start":
            assert self.message is None
            self.message = json.loads(json.dumps(data["message"]))
            return
        assert self.message is not None, f"{name} before message_start"
        getattr(self, "_" + name)(data)

    def _content_block_start(self, data: dict[str, Any]) -> None:
        assert self.message is not None
        assert self.open_index is None, "blocks may not overlap"
        assert data["index"] == len(self.message["content"]), "indexes must be consecutive"
        self.message["content"].append(dict(data["content_block"]))
        self.open_index = data["index"]

    def _content_block_delta(self, data: dict[str, Any]) -> None:
        assert self.message is not None
        assert data["index"] == self.open_index, "delta for a block that is not open"
        block, delta = self.message["content"][data["index"]], data["delta"]
        kind = delta["type"]
        if kind == "text_delta":
            assert block["type"] == "text"
            assert delta["text"]
            block["text"] += delta["text"]
        elif kind == "thinking_delta":
            assert block["type"] == "thinking"
            assert delta["thinking"]
            block["thinking"] += delta["thinking"]
        elif kind == "signature_delta":
            assert block["type"] == "thinking"
            block["signature"] = delta["signature"]
        else:
            assert kind == "input_json_delta"
            assert block["type"] == "tool_use"
            self.json_text[data["index"]] = (
                self.json_text.get(data["index"], "") + delta["partial_json"]
            )

    def _content_block_stop(self, data: dict[str, Any]) -> None:
        assert self.message is not None
        assert data["index"] == self.open_index
        block = self.message["content"][data["index"]]
        if block["type"] == "text":
            assert block["text"], "empty text block"
        elif block["type"] == "thinking":
            assert block["signature"], "thinking block closed without a signature"
        elif data["index"] in self.json_text:
            block["input"] = json.loads(self.json_text[data["index"]])
            assert isinstance(block["input"], dict)
        self.open_index = None

    def _message_delta(self, data: dict[str, Any]) -> None:
        assert self.message is not None
        assert self.open_index is None, "message_delta while a block is open"
        self.message["stop_reason"] = data["delta"]["stop_reason"]
        self.message["stop_sequence"] = data["delta"]["stop_sequence"]
        for key, value in data["usage"].items():
            if value is not None:
                self.message["usage"][key] = value

    def _message_stop(self, data: dict[str, Any]) -> None:
        assert self.message is not None
        assert self.message["stop_reason"] is not None
        self.finished = True


def accumulate(events: list[Event]) -> Accumulator:
    acc = Accumulator()
    for event in events:
        acc.apply(event)
    return acc


def message_of(events: list[Event]) -> dict[str, Any]:
    """The message the events build, which the test expects them to have started."""
    message = accumulate(events).message
    assert message is not None
    return message


def fixture(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((FIXTURES / f"{name}.json").read_text())
    return data


def replay(
    name: str, request: OpenAIRequest = REQUEST, input_tokens: int = 50
) -> tuple[list[list[Event]], OpenAIStreamTranslator]:
    """Events per chunk (the last entry is what ``finish`` returned) and the translator."""
    recorded = fixture(name)
    translator = OpenAIStreamTranslator(model=MODEL, request=request, input_tokens=input_tokens)
    per_chunk = [translator.feed(chunk) for chunk in recorded["chunks"]]
    per_chunk.append(translator.finish(saw_done=recorded["done"]))
    return per_chunk, translator


def replay_message(name: str, **kw: Any) -> dict[str, Any]:
    per_chunk, _ = replay(name, **kw)
    acc = accumulate([e for events in per_chunk for e in events])
    assert acc.finished
    assert acc.message is not None
    return acc.message


def names(events: list[Event]) -> list[str]:
    return [name for name, _ in events]


FIXTURE_NAMES = sorted(p.stem for p in FIXTURES.glob("*.json"))


# --- every fixture ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", FIXTURE_NAMES)
def test_every_fixture_follows_the_grammar(name: str) -> None:
    per_chunk, _ = replay(name)
    events = [e for chunk_events in per_chunk for e in chunk_events]
    acc = accumulate(events)
    assert acc.finished or acc.error is not None
    assert events[0][0] in ("message_start", "error")
    if acc.message is not None:
        assert acc.message["model"] == MODEL
        assert acc.message["usage"]["input_tokens"] > 0
        for block in acc.message["content"]:
            if block["type"] == "tool_use":
                assert CLIENT_ID.match(block["id"])


@pytest.mark.parametrize(
    "name", ["openai_text", "vllm_interleaved_tools", "deepseek_reasoning", "ollama_same_index"]
)
def test_the_sdk_accumulates_the_same_message(name: str) -> None:
    pytest.importorskip("anthropic")
    from anthropic.lib.streaming._messages import accumulate_event

    per_chunk, _ = replay(name)
    events = [e for chunk_events in per_chunk for e in chunk_events]
    snapshot: Any = None
    json_bufs: dict[int, bytes] = {}
    for _, data in events:
        # The SDK's accumulator is typed for its event models; it reads our plain dicts alike.
        snapshot = accumulate_event(event=data, current_snapshot=snapshot, json_bufs=json_bufs)  # type: ignore[arg-type]
    sdk, ours = snapshot.to_dict(), accumulate(events).message
    assert ours is not None
    for key in ("content", "stop_reason", "stop_sequence"):
        assert sdk[key] == ours[key]
    assert {k: sdk["usage"][k] for k in ours["usage"]} == ours["usage"]


# --- message_start and usage -----------------------------------------------------------------


def test_nothing_is_emitted_before_the_first_chunk() -> None:
    translator = OpenAIStreamTranslator(model=MODEL, request=REQUEST, input_tokens=10)
    first = translator.feed(fixture("openai_text")["chunks"][0])
    assert names(first) == ["message_start"]


def test_message_start_usage_uses_the_local_count_and_the_final_delta_the_real_one() -> None:
    per_chunk, translator = replay("openai_text", input_tokens=1800)
    start = per_chunk[0][0][1]["message"]
    assert start["usage"]["input_tokens"] == 1800
    assert start["stop_reason"] is None
    assert start["stop_sequence"] is None
    assert start["content"] == []
    assert start["id"].startswith("msg_")
    assert start["type"] == "message"
    assert start["role"] == "assistant"
    delta = per_chunk[-1][0][1]
    assert delta["usage"] == {
        "input_tokens": 1921 - 1024,
        "output_tokens": 12,
        "cache_read_input_tokens": 1024,
        "cache_creation_input_tokens": 0,
    }
    assert translator.usage_reported
    assert not translator.usage.estimated
    assert (translator.usage.input_tokens, translator.usage.output_tokens) == (897, 12)


def test_text_answer_events() -> None:
    per_chunk, _ = replay("openai_text")
    assert per_chunk[0] == [per_chunk[0][0]]  # the role chunk with "" content starts no block
    assert names(per_chunk[1]) == ["content_block_start", "content_block_delta"]
    assert per_chunk[1][0][1]["content_block"] == {"type": "text", "text": ""}
    assert names(per_chunk[5]) == ["content_block_stop"]  # the finish chunk
    assert per_chunk[6] == []  # the usage-only chunk waits for the end
    assert names(per_chunk[7]) == ["message_delta", "message_stop"]
    message = replay_message("openai_text")
    assert message["content"] == [{"type": "text", "text": "Hello! How can I help?"}]
    assert (message["stop_reason"], message["stop_sequence"]) == ("end_turn", None)


def _text_chunk(delta: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion.chunk",
        "choices": [{"index": 0, "delta": delta, "finish_reason": None}],
        "usage": None,
    }


@pytest.mark.parametrize("reasoning", ["", "Hmm."])  # the text block is at index 0, or 1
@pytest.mark.parametrize(
    "text",
    ["tok", " café ✓ 😀", 'say "hi" \\ C:\\dir\\n\nnext\tline\r', "\x00\x1f\x7f\u2028</script>"],
)
def test_the_text_fast_path_sends_the_bytes_of_the_general_path(
    text: str, reasoning: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    def after_open_text(extra: dict[str, Any], *, way: str) -> bytes:
        translator = OpenAIStreamTranslator(model=MODEL, request=REQUEST, input_tokens=5)
        translator.feed(_text_chunk({"reasoning_content": reasoning}))
        translator.feed(_text_chunk({"role": "assistant", "content": "Hi"}))
        chunk = _text_chunk({"content": text, **extra})
        with monkeypatch.context() as patch:
            if way != "general":  # the general path reads every delta through message_texts
                patch.setattr(openai_stream, "message_texts", None)
            if way == "sse":
                sent = translator.feed_sse(chunk)
            else:
                sent = b"".join(encode_event(name, data) for name, data in translator.feed(chunk))
        stop = {"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}
        assert names(translator.feed(stop)) == ["content_block_stop"]
        assert translator.content[-1] == {"type": "text", "text": "Hi" + text}
        return sent

    general = after_open_text({"refusal": None}, way="general")  # a key the fast path refuses
    assert after_open_text({}, way="events") == general
    assert after_open_text({}, way="sse") == general
    index = b"1" if reasoning else b"0"
    assert general == (
        b'event: content_block_delta\ndata: {"type":"content_block_delta","index":'
        + index
        + b',"delta":{"type":"text_delta","text":'
        + json.dumps(text, ensure_ascii=False).encode()
        + b"}}\n\n"
    )


_RANDOM_PARTS = re.compile(rb"msg_[0-9a-f]{24}|mg0\.[A-Za-z0-9_-]+|toolu_[0-9a-f]{24}")


@pytest.mark.parametrize("name", FIXTURE_NAMES)
def test_feed_sse_sends_the_encoded_events_of_feed(name: str) -> None:
    chunks = fixture(name)["chunks"]
    by_events = OpenAIStreamTranslator(model=MODEL, request=REQUEST, input_tokens=50)
    by_sse = OpenAIStreamTranslator(model=MODEL, request=REQUEST, input_tokens=50)
    for chunk in chunks:
        events = by_events.feed(chunk)
        encoded = b"".join(encode_event(event, data) for event, data in events)
        sent = by_sse.feed_sse(chunk)
        assert _RANDOM_PARTS.sub(b"?", sent) == _RANDOM_PARTS.sub(b"?", encoded)
    assert by_sse.finish(saw_done=True) == by_events.finish(saw_done=True)


def test_usage_on_the_finish_chunk() -> None:
    message = replay_message("deepseek_reasoning")
    assert message["usage"] == {
        "input_tokens": 56,
        "output_tokens": 30,
        "cache_read_input_tokens": 64,
        "cache_creation_input_tokens": 0,
    }


def test_groq_usage_under_x_groq() -> None:
    assert replay_message("groq_x_groq_usage")["usage"]["output_tokens"] == 2


def test_no_usage_is_estimated_and_said_so() -> None:
    _, translator = replay("ollama_same_index", input_tokens=333)
    message = replay_message("ollama_same_index", input_tokens=333)
    pieces = 'User wants two files.Read{"file_path":"a.txt"}Read{"file_path":"b.txt"}'
    assert message["usage"]["output_tokens"] == count_text(pieces)
    assert message["usage"]["input_tokens"] == 333
    assert translator.usage.estimated
    assert not translator.usage_reported
    assert translator.usage.output_tokens == count_text(pieces)


def test_usage_in_the_first_chunk_sets_message_start() -> None:
    chunk = {
        "choices": [{"index": 0, "delta": {"content": "a"}}],
        "usage": {"prompt_tokens": 77, "completion_tokens": 1},
    }
    translator = OpenAIStreamTranslator(model=MODEL, request=REQUEST, input_tokens=5)
    assert translator.feed(chunk)[0][1]["message"]["usage"]["input_tokens"] == 77


# --- text and tool blocks --------------------------------------------------------------------


def test_tool_only_answer_starts_with_tool_use() -> None:
    per_chunk, _ = replay("openai_parallel_tools")
    first_block = next(e for events in per_chunk for e in events if e[0] == "content_block_start")
    assert first_block[1]["index"] == 0
    assert first_block[1]["content_block"] == {
        "type": "tool_use",
        "id": "call_Vx3kqTq8rJ0dQfX1mD2lYb7N",
        "name": "get_weather",
        "input": {},
    }
    message = replay_message("openai_parallel_tools")
    assert [b["type"] for b in message["content"]] == ["tool_use", "tool_use"]
    assert message["content"][0]["input"] == {"city": "Paris"}
    assert message["content"][1]["input"] == {"tz": "Europe/Paris"}
    assert message["stop_reason"] == "tool_use"


def test_name_before_arguments_starts_the_block_at_once() -> None:
    per_chunk, _ = replay("openai_parallel_tools")
    assert names(per_chunk[0]) == ["message_start", "content_block_start"]
    assert per_chunk[1][0][1]["delta"] == {"type": "input_json_delta", "partial_json": "{"}
    # the second call starts as soon as the first one's JSON is complete
    assert names(per_chunk[4]) == ["content_block_stop", "content_block_start"]


def test_content_with_empty_tool_calls_is_text() -> None:
    per_chunk, _ = replay("ollama_tool_stop")
    assert per_chunk[0][1:] == [
        (
            "content_block_start",
            {
                "type": "content_block_start",
                "index": 0,
                "content_block": {"type": "text", "text": ""},
            },
        ),
        (
            "content_block_delta",
            {
                "type": "content_block_delta",
                "index": 0,
                "delta": {"type": "text_delta", "text": "Let me look."},
            },
        ),
    ]
    message = replay_message("ollama_tool_stop")
    assert [b["type"] for b in message["content"]] == ["text", "tool_use"]
    assert message["stop_reason"] == "tool_use"  # "stop" after a tool call


def test_arguments_only_in_the_last_chunk_fill_the_input() -> None:
    message = replay_message("args_in_last_chunk")
    assert message["content"] == [
        {"type": "tool_use", "id": "call_lc1", "name": "Bash", "input": {"command": "pwd"}}
    ]


def test_ollama_calls_sharing_an_index_are_two_blocks() -> None:
    message = replay_message("ollama_same_index")
    tools = [b for b in message["content"] if b["type"] == "tool_use"]
    assert [(t["id"], t["input"]) for t in tools] == [
        ("call_k3v9x2ab", {"file_path": "a.txt"}),
        ("call_p0q8w7er", {"file_path": "b.txt"}),
    ]


def test_interleaved_tool_calls_are_serialized() -> None:
    per_chunk, _ = replay("vllm_interleaved_tools")
    message = replay_message("vllm_interleaved_tools")
    assert [b["type"] for b in message["content"]] == ["thinking", "text", "tool_use", "tool_use"]
    assert message["content"][2]["name"] == "Read"
    assert message["content"][2]["input"] == {"file_path": "/etc/hosts"}
    assert message["content"][3]["input"] == {"pattern": "*.py"}
    # Read streams live: its block starts with its name, its first fragment follows at once.
    assert names(per_chunk[4]) == ["content_block_stop", "content_block_start"]
    assert names(per_chunk[5]) == ["content_block_delta"]
    # Glob waits while Read is incomplete, and is flushed whole when Read's JSON closes.
    assert per_chunk[6] == []
    assert per_chunk[7] == []
    assert names(per_chunk[9]) == [
        "content_block_delta",
        "content_block_stop",
        "content_block_start",
        "content_block_delta",
    ]
    assert per_chunk[9][3][1]["delta"]["partial_json"] == '{"pattern": "*.py"}'


def test_mistral_whole_tool_call_in_the_finish_chunk() -> None:
    message = replay_message("mistral_tool_call")
    assert message["content"][1] == {
        "type": "tool_use",
        "id": "D681PevKs",
        "name": "get_weather",
        "input": {"city": "Paris"},
    }
    assert message["stop_reason"] == "tool_use"
    assert message["usage"]["output_tokens"] == 28


def test_odd_tool_ids_are_rewritten_and_decode_back() -> None:
    chunks = [
        {
            "choices": [
                {
                    "index": 0,
                    "delta": {
                        "tool_calls": [
                            {
                                "index": 0,
                                "id": "functions.Bash:0",
                                "type": "function",
                                "function": {"name": "Bash", "arguments": "{}"},
                            }
                        ]
                    },
                }
            ]
        },
        {"choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]},
    ]
    translator = OpenAIStreamTranslator(model=MODEL, request=REQUEST, input_tokens=5)
    events = [e for c in chunks for e in translator.feed(c)] + translator.finish(saw_done=True)
    block = message_of(events)["content"][0]
    assert CLIENT_ID.match(block["id"])
    assert original_tool_id(block["id"]) == "functions.Bash:0"


def test_long_tool_names_come_back_as_the_clients() -> None:
    long_name = "mcp__" + "x" * 70
    names_ = ToolNames.for_tools([long_name], 64)
    request = OpenAIRequest(payload={}, tool_names=names_)
    chunks = [
        {
            "choices": [
                {
                    "index": 0,
                    "delta": {
                        "tool_calls": [
                            {
                                "index": 0,
                                "id": "c1",
                                "function": {"name": names_.upstream(long_name), "arguments": ""},
                            }
                        ]
                    },
                }
            ]
        },
        {"choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]},
    ]
    translator = OpenAIStreamTranslator(model=MODEL, request=request, input_tokens=5)
    events = [e for c in chunks for e in translator.feed(c)] + translator.finish(saw_done=True)
    assert message_of(events)["content"][0]["name"] == long_name


def test_truncated_arguments_are_closed_for_the_client() -> None:
    per_chunk, _ = replay("openai_length_tool")
    finish_events = per_chunk[3]
    assert finish_events[0][1]["delta"] == {"type": "input_json_delta", "partial_json": '"}'}
    message = replay_message("openai_length_tool")
    assert message["content"][0]["input"] == {"file_path": "/tmp/a.py", "content": "print(1)\nprin"}
    assert message["stop_reason"] == "max_tokens"


def test_nothing_follows_a_blocks_stop() -> None:
    chunks = [
        {"choices": [{"index": 0, "delta": {"content": "done"}, "finish_reason": "stop"}]},
        {"choices": [{"index": 0, "delta": {"content": " late"}}]},
    ]
    translator = OpenAIStreamTranslator(model=MODEL, request=REQUEST, input_tokens=5)
    events = [e for c in chunks for e in translator.feed(c)] + translator.finish(saw_done=True)
    assert message_of(events)["content"] == [{"type": "text", "text": "done"}]


def test_text_after_an_incomplete_tool_call_waits_for_it() -> None:
    first = {
        "index": 0,
        "id": "c1",
        "type": "function",
        "function": {"name": "T", "arguments": '{"a": '},
    }
    chunks = [
        {"choices": [{"index": 0, "delta": {"tool_calls": [first]}}]},
        {"choices": [{"index": 0, "delta": {"content": "aside"}}]},
        {
            "choices": [
                {
                    "index": 0,
                    "delta": {"tool_calls": [{"index": 0, "function": {"arguments": "1}"}}]},
                }
            ]
        },
        {"choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]},
    ]
    translator = OpenAIStreamTranslator(model=MODEL, request=REQUEST, input_tokens=5)
    events = [e for c in chunks for e in translator.feed(c)] + translator.finish(saw_done=True)
    content = message_of(events)["content"]
    assert content == [
        {"type": "tool_use", "id": "c1", "name": "T", "input": {"a": 1}},
        {"type": "text", "text": "aside"},
    ]


# --- reasoning -------------------------------------------------------------------------------


def test_reasoning_content_is_a_signed_thinking_block_before_the_text() -> None:
    per_chunk, _ = replay("deepseek_reasoning")
    events = [e for chunk_events in per_chunk for e in chunk_events]
    stop_of_thinking = events.index(
        ("content_block_stop", {"type": "content_block_stop", "index": 0})
    )
    assert events[stop_of_thinking - 1][1]["delta"]["type"] == "signature_delta"
    message = replay_message("deepseek_reasoning")
    thinking, text = message["content"]
    assert thinking["thinking"] == "The user says hi."
    assert is_gateway_signature(thinking["signature"])
    assert text == {"type": "text", "text": "Hi there!"}


def test_mistral_thinking_parts() -> None:
    message = replay_message("magistral_thinking")
    assert [(b["type"], b.get("thinking") or b.get("text")) for b in message["content"]] == [
        ("thinking", "Simple greeting."),
        ("text", "Hello!"),
    ]


# --- stop reasons ----------------------------------------------------------------------------


def test_vllm_stop_reason_names_the_stop_sequence() -> None:
    request = OpenAIRequest(payload={}, tool_names=ToolNames(), stop_sequences=("###",))
    message = replay_message("vllm_stop_sequence", request=request)
    assert (message["stop_reason"], message["stop_sequence"]) == ("stop_sequence", "###")
    assert message["content"] == [{"type": "text", "text": "1, 2, 3, 4"}]


@pytest.mark.parametrize(
    ("finish", "expected"),
    [("length", "max_tokens"), ("content_filter", "refusal"), ("stop", "end_turn")],
)
def test_finish_reasons(finish: str, expected: str) -> None:
    translator = OpenAIStreamTranslator(model=MODEL, request=REQUEST, input_tokens=5)
    events = translator.feed(
        {"choices": [{"index": 0, "delta": {"content": "x"}, "finish_reason": finish}]}
    )
    events += translator.finish(saw_done=True)
    assert message_of(events)["stop_reason"] == expected


def test_stop_sequence_at_the_end_of_the_text() -> None:
    request = OpenAIRequest(payload={}, tool_names=ToolNames(), stop_sequences=("END",))
    translator = OpenAIStreamTranslator(model=MODEL, request=request, input_tokens=5)
    events = translator.feed(
        {"choices": [{"index": 0, "delta": {"content": "a END"}, "finish_reason": "stop"}]}
    )
    message = accumulate(events + translator.finish(saw_done=True)).message
    assert message is not None
    assert (message["stop_reason"], message["stop_sequence"]) == ("stop_sequence", "END")


# --- failures --------------------------------------------------------------------------------


def test_stream_ending_without_finish_reason_is_an_error_not_end_turn() -> None:
    per_chunk, translator = replay("openai_truncated")
    assert per_chunk[-1] == [
        (
            "error",
            {
                "type": "error",
                "error": {
                    "type": "api_error",
                    "message": "the upstream's stream ended before the answer finished",
                },
            },
        )
    ]
    events = [e for chunk_events in per_chunk for e in chunk_events]
    assert "message_delta" not in names(events)
    assert "message_stop" not in names(events)
    assert translator.error is not None
    assert translator.finish(saw_done=False) == []


def test_done_without_finish_reason_is_an_error_too() -> None:
    translator = OpenAIStreamTranslator(model=MODEL, request=REQUEST, input_tokens=5)
    translator.feed({"choices": [{"index": 0, "delta": {"content": "x"}}]})
    assert names(translator.finish(saw_done=True)) == ["error"]


def test_empty_stream_is_an_error() -> None:
    translator = OpenAIStreamTranslator(model=MODEL, request=REQUEST, input_tokens=5)
    assert names(translator.finish(saw_done=False)) == ["error"]


def test_upstream_error_chunk_becomes_an_error_event() -> None:
    per_chunk, translator = replay("openai_error_midstream")
    assert per_chunk[2] == [
        (
            "error",
            {
                "type": "error",
                "error": {
                    "type": "api_error",
                    "message": "The server had an error while processing your request. "
                    "Sorry about that!",
                },
            },
        )
    ]
    assert per_chunk[3] == []
    assert translator.feed({"choices": [{"index": 0, "delta": {"content": "more"}}]}) == []


def test_error_chunk_with_a_status_code() -> None:
    translator = OpenAIStreamTranslator(model=MODEL, request=REQUEST, input_tokens=5)
    events = translator.feed({"error": {"message": "Rate limit exceeded", "code": 429}})
    assert events == [
        (
            "error",
            {
                "type": "error",
                "error": {"type": "rate_limit_error", "message": "Rate limit exceeded"},
            },
        )
    ]


def test_finish_reason_error_is_an_error_event() -> None:
    translator = OpenAIStreamTranslator(model=MODEL, request=REQUEST, input_tokens=5)
    events = translator.feed(
        {"choices": [{"index": 0, "delta": {"content": "x"}, "finish_reason": "error"}]}
    )
    assert names(events)[-1] == "error"
    assert translator.finish(saw_done=True) == []


# --- property: streamed and non-streamed translations agree ----------------------------------

LONG_NAME = "mcp__" + "very_long_server_name_" * 3 + "tool"
SCRIPT_NAMES = ToolNames.for_tools([LONG_NAME], 64)
SCRIPT_REQUEST = OpenAIRequest(payload={}, tool_names=SCRIPT_NAMES, stop_sequences=("END",))

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-1000, 1000)
    | st.floats(-1e6, 1e6)
    | st.text(max_size=6),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=4), children, max_size=3)
    ),
    max_leaves=6,
)
pieces = st.lists(st.text(max_size=6) | st.sampled_from(["END", " ", "\n"]), max_size=3)


@dataclass
class ScriptTool:
    id: str | None
    name: str
    arguments: str
    fragments: list[str]


@st.composite
def tool_calls(draw: st.DrawFn, index: int, same_index: bool) -> ScriptTool:
    ids = [f"call_{index}", f"functions.T{index}:{index}"] + ([] if same_index else [None])
    arguments = json.dumps(draw(st.dictionaries(st.text(max_size=5), json_values, max_size=3)))
    if draw(st.booleans()):
        arguments = arguments[: draw(st.integers(0, len(arguments)))]  # a cut-off call
    cuts = sorted(draw(st.lists(st.integers(0, len(arguments)), max_size=4)))
    bounds = [0, *cuts, len(arguments)]
    fragments = [arguments[a:b] for a, b in itertools.pairwise(bounds)]
    name = draw(st.sampled_from(["Bash", "Read", SCRIPT_NAMES.upstream(LONG_NAME)]))
    return ScriptTool(draw(st.sampled_from(ids)), name, arguments, fragments)


@dataclass
class Script:
    reasoning_field: str
    reasoning: list[str]
    text: list[str]
    tools: list[ScriptTool]
    same_index: bool
    order: list[int]  # which tool each fragment chunk belongs to
    finish: str
    matched: str | int | None
    usage: dict[str, Any] | None
    usage_on_finish: bool
    empty_tool_calls: bool


@st.composite
def scripts(draw: st.DrawFn) -> Script:
    same_index = draw(st.booleans())
    tools = [draw(tool_calls(i, same_index)) for i in range(draw(st.integers(0, 3)))]
    order = _interleaving(draw, tools, same_index)
    usage = draw(
        st.none()
        | st.fixed_dictionaries(
            {
                "prompt_tokens": st.integers(1, 5000),
                "completion_tokens": st.integers(0, 500),
                "prompt_tokens_details": st.fixed_dictionaries(
                    {"cached_tokens": st.integers(0, 50)}
                ),
            }
        )
    )
    return Script(
        reasoning_field=draw(st.sampled_from(["reasoning_content", "reasoning"])),
        reasoning=draw(pieces),
        text=draw(pieces),
        tools=tools,
        same_index=same_index,
        order=order,
        finish=draw(
            st.sampled_from(["stop", "length", "tool_calls", "content_filter", "function_call"])
        ),
        matched=draw(st.sampled_from([None, "END", 128001])),
        usage=usage,
        usage_on_finish=draw(st.booleans()),
        empty_tool_calls=draw(st.booleans()),
    )


def _interleaving(draw: st.DrawFn, tools: list[ScriptTool], same_index: bool) -> list[int]:
    """Fragments of different calls mixed; each call first appears in index order."""
    remaining = [len(t.fragments) for t in tools]
    started, order = 0, []
    while any(remaining):
        live = [i for i in range(started) if remaining[i]]
        if same_index:  # a call is over once the next one reuses its index
            live = live[-1:] if live and live[-1] == started - 1 else []
        if started < len(tools) and (not live or (not same_index and draw(st.booleans()))):
            i, started = started, started + 1
        else:
            i = draw(st.sampled_from(live))
        remaining[i] -= 1
        order.append(i)
    return order


def script_chunks(script: Script) -> list[dict[str, Any]]:
    def chunk(delta: dict[str, Any], **choice: Any) -> dict[str, Any]:
        return {
            "object": "chat.completion.chunk",
            "choices": [{"index": 0, "delta": delta, **choice}],
        }

    chunks = [chunk({"role": "assistant", "content": ""})]
    chunks += [chunk({script.reasoning_field: piece}) for piece in script.reasoning]
    extra: dict[str, Any] = {"tool_calls": []} if script.empty_tool_calls else {}
    chunks += [chunk({"content": piece, **extra}) for piece in script.text]
    sent = [0] * len(script.tools)
    for i in script.order:
        tool, k = script.tools[i], sent[i]
        entry: dict[str, Any] = {
            "index": 0 if script.same_index else i,
            "function": {"arguments": tool.fragments[k]},
        }
        if k == 0:
            entry["function"]["name"] = tool.name
            entry |= {"id": tool.id, "type": "function"} if tool.id else {}
        sent[i] += 1
        chunks.append(chunk({"tool_calls": [entry]}))
    finish = chunk({}, finish_reason=script.finish, stop_reason=script.matched)
    chunks.append(
        finish | ({"usage": script.usage} if script.usage and script.usage_on_finish else {})
    )
    if script.usage and not script.usage_on_finish:
        chunks.append({"object": "chat.completion.chunk", "choices": [], "usage": script.usage})
    return chunks


def script_response(script: Script) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": "".join(script.text) or None}
    message[script.reasoning_field] = "".join(script.reasoning) or None
    if script.tools:
        message["tool_calls"] = [
            {"id": t.id, "type": "function", "function": {"name": t.name, "arguments": t.arguments}}
            for t in script.tools
        ]
    choice = {
        "index": 0,
        "message": message,
        "finish_reason": script.finish,
        "stop_reason": script.matched,
    }
    return {"object": "chat.completion", "choices": [choice]} | (
        {"usage": script.usage} if script.usage else {}
    )


def normalized(message: dict[str, Any], script: Script) -> dict[str, Any]:
    """Drop what is random: the message id, signatures, ids minted for calls without one."""
    message = json.loads(json.dumps(message))
    message.pop("id")
    tools = iter(script.tools)
    for block in message["content"]:
        if block["type"] == "thinking":
            assert is_gateway_signature(block.pop("signature"))
        elif block["type"] == "tool_use":
            assert CLIENT_ID.match(block["id"])
            if next(tools).id is None:
                block["id"] = "minted"
    return message


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scripts())
def test_streamed_answer_equals_the_non_streamed_translation(script: Script) -> None:
    translator = OpenAIStreamTranslator(model=MODEL, request=SCRIPT_REQUEST, input_tokens=42)
    events = [e for chunk in script_chunks(script) for e in translator.feed(chunk)]
    events += translator.finish(saw_done=True)
    acc = accumulate(events)
    assert acc.finished
    assert acc.message is not None
    expected = to_anthropic_message(
        script_response(script), model=MODEL, request=SCRIPT_REQUEST, input_tokens=42
    )
    assert normalized(acc.message, script) == normalized(expected, script)
    assert translator.usage_reported == (script.usage is not None)


def test_malformed_chunks_never_crash() -> None:
    translator = OpenAIStreamTranslator(model=MODEL, request=REQUEST, input_tokens=5)
    odd: list[Any] = [
        {"choices": [{"index": 0, "delta": None}]},
        {"choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0, "function": "x"}]}}]},
        {"choices": ["nonsense"], "x_groq": "nonsense"},
    ]
    events = [e for chunk in odd for e in translator.feed(chunk)]
    assert names(events) == ["message_start"]
    # Not a chunk's type, on purpose: a peer can send any JSON.
    assert names(translator.feed([1, 2])) == ["error"]  # type: ignore[arg-type]
