"""Non-streaming OpenAI answers, their error answers, and tool arguments that are not quite JSON."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from messagegate.errors import UpstreamProtocolError, UpstreamStatusError
from messagegate.translate.json_prefix import JsonPrefix
from messagegate.translate.openai_errors import classify_error_object, classify_openai_error
from messagegate.translate.openai_request import OpenAIRequest
from messagegate.translate.openai_response import to_anthropic_message
from messagegate.translate.openai_rules import (
    load_arguments,
    parse_arguments,
    repaired_arguments,
)
from messagegate.translate.signatures import gateway_signature, is_gateway_signature
from messagegate.translate.token_count import count_text
from messagegate.translate.tool_ids import ToolNames

REQUEST = OpenAIRequest(payload={}, tool_names=ToolNames())
CLIENT_ID = re.compile(r"^[a-zA-Z0-9_-]+$")


def completion(
    message: dict[str, Any], finish: str | None = "stop", **extra: Any
) -> dict[str, Any]:
    """An OpenAI chat.completion as the API returns it."""
    return {
        "id": "chatcmpl-BLq0Zs8WkXnRk2u5x3UaVYbq1dE4T",
        "object": "chat.completion",
        "created": 1763775600,
        "model": "gpt-4.1-2025-04-14",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", **message},
                "logprobs": None,
                "finish_reason": finish,
                **extra,
            }
        ],
        "usage": {
            "prompt_tokens": 100,
            "completion_tokens": 20,
            "total_tokens": 120,
            "prompt_tokens_details": {"cached_tokens": 40, "audio_tokens": 0},
        },
        "service_tier": "default",
        "system_fingerprint": "fp_b3f1157249",
    }


def call(id_: str | None, name: str, arguments: Any) -> dict[str, Any]:
    return {"id": id_, "type": "function", "function": {"name": name, "arguments": arguments}}


def translate(
    response: dict[str, Any], request: OpenAIRequest = REQUEST, **kw: Any
) -> dict[str, Any]:
    return to_anthropic_message(response, model="claude-sonnet-4-5", request=request, **kw)


# --- the message -----------------------------------------------------------------------------


def test_text_answer() -> None:
    message = translate(completion({"content": "Hello!", "refusal": None}))
    assert message["id"].startswith("msg_")
    assert len(message["id"]) >= 28
    assert message == {
        "id": message["id"],
        "type": "message",
        "role": "assistant",
        "model": "claude-sonnet-4-5",
        "content": [{"type": "text", "text": "Hello!"}],
        "stop_reason": "end_turn",
        "stop_sequence": None,
        "usage": {
            "input_tokens": 60,
            "output_tokens": 20,
            "cache_read_input_tokens": 40,
            "cache_creation_input_tokens": 0,
        },
    }


def test_ids_are_unique() -> None:
    response = completion({"content": "x"})
    assert translate(response)["id"] != translate(response)["id"]


@pytest.mark.parametrize("field", ["reasoning_content", "reasoning"])
def test_content_order_is_thinking_text_tool_use(field: str) -> None:
    message = {
        "content": "I'll check.",
        field: "Need the weather.",
        "tool_calls": [call("call_1", "get_weather", '{"city": "Paris"}')],
    }
    content = translate(completion(message, "tool_calls"))["content"]
    assert [b["type"] for b in content] == ["thinking", "text", "tool_use"]
    assert content[0]["thinking"] == "Need the weather."
    assert is_gateway_signature(content[0]["signature"])
    assert content[2] == {
        "type": "tool_use",
        "id": "call_1",
        "name": "get_weather",
        "input": {"city": "Paris"},
    }


def test_tool_only_answer_has_no_text_block() -> None:
    message = {"content": None, "tool_calls": [call("call_1", "Bash", '{"command":"ls"}')]}
    result = translate(completion(message, "tool_calls"))
    assert [b["type"] for b in result["content"]] == ["tool_use"]
    assert result["stop_reason"] == "tool_use"


def test_empty_text_is_never_a_block() -> None:
    result = translate(completion({"content": ""}))
    assert result["content"] == []


def test_tool_call_ids_and_names_are_mapped_for_the_client() -> None:
    long_name = "mcp__" + "x" * 70
    names = ToolNames.for_tools([long_name], 64)
    request = OpenAIRequest(payload={}, tool_names=names)
    message = {
        "tool_calls": [
            call("functions.Bash:0", names.upstream(long_name), "{}"),
            call(None, "Bash", "{}"),
        ]
    }
    content = translate(completion(message, "tool_calls"), request)["content"]
    assert content[0]["name"] == long_name
    assert CLIENT_ID.match(content[0]["id"])
    assert content[0]["id"] != "functions.Bash:0"
    assert CLIENT_ID.match(content[1]["id"])


def test_legacy_function_call() -> None:
    message = {"content": None, "function_call": {"name": "Bash", "arguments": '{"command":"pwd"}'}}
    result = translate(completion(message, "function_call"))
    assert result["content"][0]["input"] == {"command": "pwd"}
    assert result["content"][0]["name"] == "Bash"
    assert result["stop_reason"] == "tool_use"


def test_mistral_content_parts() -> None:
    parts = [
        {"type": "thinking", "thinking": [{"type": "text", "text": "Hmm."}]},
        {"type": "text", "text": "Hi"},
        {"type": "text", "text": "!"},
    ]
    content = translate(completion({"content": parts}))["content"]
    assert [(b["type"], b.get("thinking") or b.get("text")) for b in content] == [
        ("thinking", "Hmm."),
        ("text", "Hi!"),
    ]


def test_refusal_text_is_kept() -> None:
    result = translate(completion({"content": None, "refusal": "I can't help with that."}))
    assert result["content"] == [{"type": "text", "text": "I can't help with that."}]


# --- tool arguments --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("arguments", "expected"),
    [
        ('{"a": 1}', {"a": 1}),
        ("", {}),
        (None, {}),
        ({"already": "parsed"}, {"already": "parsed"}),
        ('{"path": "a.py", "content": "de', {"path": "a.py", "content": "de"}),  # cut off
        ('{"a": [1, {"b": "c', {"a": [1, {"b": "c"}]}),
        ('{"a": 1, "b"', {"a": 1}),  # a member whose value never started is left out
        ('{"a": 1,', {"a": 1}),
        ('{"a": tru', {}),
        ('{"a": "x\\', {"a": "x"}),  # half an escape
        ('{"a": "\\ud83d', {"a": ""}),  # cut between the halves of a surrogate pair
        ('{"a": "\\ud83d\\ude00"}', {"a": "\U0001f600"}),
        ('{"a": "\\udc00"}', {"a": ""}),  # a lone low surrogate: most parsers refuse it
        ('{"a": "line\nbreak"}', {"a": "line\nbreak"}),  # raw control character
        ('{"a": 1}{"a": 2}', {"a": 1}),  # sent twice
        ("{'a': 1}", {}),  # not JSON at all
        ("[1, 2]", {}),  # JSON, but not an object
        ('"text"', {}),
    ],
)
def test_arguments_best_effort(arguments: Any, expected: dict[str, Any]) -> None:
    assert parse_arguments(arguments) == expected
    message = {"tool_calls": [call("c", "T", arguments)]}
    assert translate(completion(message, "tool_calls"))["content"][0]["input"] == expected


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**53), 2**53)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=5), children, max_size=3)
    ),
    max_leaves=8,
)
json_objects = st.dictionaries(st.text(max_size=8), json_values, max_size=4)


@settings(max_examples=150, deadline=None)
@given(json_objects, st.booleans(), st.lists(st.integers(1, 7), min_size=1, max_size=20), st.data())
def test_json_prefix_releases_valid_json_exactly(
    obj: dict[str, Any], ascii_only: bool, sizes: list[int], data: st.DataObject
) -> None:
    text = json.dumps(obj, ensure_ascii=ascii_only, indent=data.draw(st.sampled_from([None, 1])))
    prefix, released, pos = JsonPrefix(), [], 0
    for size in sizes * (len(text) // sum(sizes) + 1):
        released.append(prefix.feed(text[pos : pos + size]))
        pos += size
    assert prefix.complete
    assert json.loads("".join(released) + prefix.completion()) == obj
    assert parse_arguments(text) == obj
    cut = text[: data.draw(st.integers(0, len(text)))]
    repaired = repaired_arguments(cut)
    assert repaired == "" or isinstance(json.loads(repaired), dict)


@settings(max_examples=200, deadline=None)
@given(json_values | json_objects, st.data())
def test_whole_json_arguments_are_parsed_as_their_repair_would_be(
    value: Any, data: st.DataObject
) -> None:
    """Arguments that parse skip JsonPrefix; they must give the input the repair gives."""
    text = json.dumps(value, ensure_ascii=data.draw(st.booleans()))
    text = data.draw(st.sampled_from(["", " ", "\n"])) + text
    text += data.draw(st.sampled_from(["", " ", "}", "x", ', "b": 1}', "\x00"]))
    if data.draw(st.booleans()):
        text = text[: data.draw(st.integers(0, len(text)))]
    assert parse_arguments(text) == load_arguments(repaired_arguments(text))


# --- stop reasons ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("finish", "stop_reason"),
    [
        ("stop", "end_turn"),
        ("length", "max_tokens"),
        ("content_filter", "refusal"),
        (None, "end_turn"),
        ("eos", "end_turn"),
    ],
)
def test_finish_reasons(finish: str | None, stop_reason: str) -> None:
    assert translate(completion({"content": "x"}, finish))["stop_reason"] == stop_reason


def test_tool_calls_finish_without_calls_is_end_turn() -> None:
    assert translate(completion({"content": "x"}, "tool_calls"))["stop_reason"] == "end_turn"


def test_stop_with_tool_calls_is_tool_use() -> None:
    message = {"content": "", "tool_calls": [call("c", "Bash", "{}")]}  # Ollama says "stop"
    assert translate(completion(message, "stop"))["stop_reason"] == "tool_use"


def test_vllm_stop_reason_names_the_stop_sequence() -> None:
    request = OpenAIRequest(payload={}, tool_names=ToolNames(), stop_sequences=("###", "END"))
    result = translate(completion({"content": "1, 2, 3"}, "stop", stop_reason="###"), request)
    assert (result["stop_reason"], result["stop_sequence"]) == ("stop_sequence", "###")


def test_vllm_stop_token_id_is_not_a_stop_sequence() -> None:
    request = OpenAIRequest(payload={}, tool_names=ToolNames(), stop_sequences=("###",))
    result = translate(completion({"content": "done"}, "stop", stop_reason=128009), request)
    assert (result["stop_reason"], result["stop_sequence"]) == ("end_turn", None)


def test_stop_sequence_seen_at_the_end_of_the_text() -> None:
    request = OpenAIRequest(payload={}, tool_names=ToolNames(), stop_sequences=("###", "END"))
    result = translate(completion({"content": "a b END"}), request)
    assert (result["stop_reason"], result["stop_sequence"]) == ("stop_sequence", "END")


def test_no_choices_or_an_error_body_raise_gateway_errors() -> None:
    with pytest.raises(UpstreamProtocolError):
        translate({"id": "x", "choices": []})
    with pytest.raises(UpstreamStatusError) as caught:
        translate({"error": {"message": "slow down", "code": 429}})
    assert caught.value.error_type == "rate_limit_error"
    with pytest.raises(UpstreamProtocolError):
        translate(completion({"content": "par"}, "error"))


# --- usage -----------------------------------------------------------------------------------


def test_deepseek_cache_hits() -> None:
    response = completion({"content": "x"})
    response["usage"] = {
        "prompt_tokens": 120,
        "completion_tokens": 30,
        "prompt_cache_hit_tokens": 64,
        "prompt_cache_miss_tokens": 56,
    }
    usage = translate(response)["usage"]
    assert usage == {
        "input_tokens": 56,
        "output_tokens": 30,
        "cache_read_input_tokens": 64,
        "cache_creation_input_tokens": 0,
    }


def test_missing_usage_is_estimated() -> None:
    response = completion(
        {"content": "Hello there, friend.", "tool_calls": [call("c", "Bash", '{"a":1}')]}
    )
    del response["usage"]
    usage = translate(response, input_tokens=321)["usage"]
    assert usage["input_tokens"] == 321
    assert usage["output_tokens"] == count_text('Hello there, friend.Bash{"a":1}')
    assert usage["output_tokens"] > 0


# --- errors ----------------------------------------------------------------------------------


def openai_error(message: str, type_: str = "invalid_request_error", code: Any = None) -> bytes:
    return json.dumps(
        {"error": {"message": message, "type": type_, "param": None, "code": code}}
    ).encode()


@pytest.mark.parametrize(
    ("status", "client_status", "error_type", "retryable"),
    [
        (400, 400, "invalid_request_error", False),
        (422, 400, "invalid_request_error", False),
        (401, 502, "api_error", True),
        (403, 502, "api_error", True),
        (404, 404, "not_found_error", False),
        (408, 504, "timeout_error", True),
        (409, 400, "invalid_request_error", False),
        (413, 413, "request_too_large", False),
        (429, 429, "rate_limit_error", True),
        (500, 500, "api_error", True),
        (502, 502, "api_error", True),
        (504, 502, "api_error", True),
        (503, 529, "overloaded_error", True),
        (529, 529, "overloaded_error", True),
    ],
)
def test_error_statuses(status: int, client_status: int, error_type: str, retryable: bool) -> None:
    error = classify_openai_error(status, openai_error("upstream says no"), None)
    assert (error.status, error.error_type, error.retryable) == (
        client_status,
        error_type,
        retryable,
    )
    assert error.upstream_status == status


def test_400_keeps_the_upstream_message() -> None:
    body = openai_error(
        "This model's maximum context length is 128000 tokens.", code="context_length_exceeded"
    )
    error = classify_openai_error(400, body, None)
    assert error.message == "This model's maximum context length is 128000 tokens."


def test_401_never_shows_the_key() -> None:
    body = openai_error(
        "Incorrect API key provided: sk-proj-abc***************wxyz.", code="invalid_api_key"
    )
    error = classify_openai_error(401, body, None)
    assert "sk-" not in error.message
    assert "wxyz" not in error.message
    assert "provider rejected the gateway's API key" in error.message


def test_404_model_not_found() -> None:
    body = openai_error(
        "The model `gpt-9` does not exist or you do not have access to it.", code="model_not_found"
    )
    error = classify_openai_error(404, body, None)
    assert (error.status, error.error_type) == (404, "not_found_error")
    assert "gpt-9" in error.message


def test_429_carries_retry_after() -> None:
    error = classify_openai_error(429, openai_error("Rate limit reached", "requests"), "7")
    assert error.retry_after == "7"
    assert error.headers["retry-after"] == "7"
    assert error.rate_limited


def test_mistral_validation_error_message() -> None:
    detail = [{"type": "extra_forbidden", "loc": ["body", "user"], "msg": "Extra inputs..."}]
    body = json.dumps(
        {"object": "error", "message": {"detail": detail}, "type": "invalid_request_error"}
    ).encode()
    error = classify_openai_error(422, body, None)
    assert error.status == 400
    assert "extra_forbidden" in error.message


def test_plain_text_error_body_is_truncated() -> None:
    error = classify_openai_error(502, b"<html>" + b"x" * 5000 + b"</html>", None)
    assert error.message.startswith("<html>")
    assert len(error.message) <= 500


def test_empty_error_body() -> None:
    assert (
        classify_openai_error(500, b"", None).message == "the upstream provider answered HTTP 500"
    )


def test_stream_error_objects() -> None:
    vllm = classify_error_object(
        {"object": "error", "message": "out of memory", "type": "InternalServerError", "code": 503}
    )
    assert (vllm.error_type, vllm.message) == ("overloaded_error", "out of memory")
    openai = classify_error_object(
        {"error": {"message": "server had an error", "type": "server_error", "code": None}}
    )
    assert (openai.error_type, openai.status, openai.retryable) == ("api_error", 500, True)


# --- signatures ------------------------------------------------------------------------------


def test_gateway_signatures() -> None:
    first, second = gateway_signature(), gateway_signature()
    assert first != second
    assert is_gateway_signature(first)
    assert not is_gateway_signature("ErUBCkYIBBgCIkB7FzfQ+eHE7W8zQ0UQhYt7==")
    assert not is_gateway_signature("")
