"""Building OpenAI Chat Completions answers: a completion, its SSE chunks, an error."""

from __future__ import annotations

from typing import Any

import orjson

from fakes.upstream import Reply

USAGE = {"prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18}


def tool_call(call_id: str, name: str, arguments: dict[str, Any]) -> dict[str, Any]:
    """One entry of an assistant message's ``tool_calls``."""
    raw = orjson.dumps(arguments).decode()
    return {"id": call_id, "type": "function", "function": {"name": name, "arguments": raw}}


def completion(model: str, text: str, calls: list[dict[str, Any]]) -> dict[str, Any]:
    """A whole ``chat.completion`` answer."""
    message: dict[str, Any] = {"role": "assistant", "content": text or None}
    if calls:
        message["tool_calls"] = calls
    return {
        "id": "chatcmpl-e2e",
        "object": "chat.completion",
        "created": 1_700_000_000,
        "model": model,
        "choices": [{"index": 0, "message": message, "finish_reason": _finish(calls)}],
        "usage": USAGE,
    }


def chunks(model: str, text: str, calls: list[dict[str, Any]], *, usage: bool) -> list[bytes]:
    """The SSE chunks a server streams for the same answer, ``[DONE]`` last."""
    deltas: list[dict[str, Any]] = [{"role": "assistant", "content": ""}]
    if text:
        deltas += [{"content": text[:3]}, {"content": text[3:]}]
    for index, call in enumerate(calls):
        deltas.extend(_call_deltas(index, call))
    out = [_chunk(model, {"index": 0, "delta": d, "finish_reason": None}) for d in deltas]
    out.append(_chunk(model, {"index": 0, "delta": {}, "finish_reason": _finish(calls)}))
    if usage:
        out.append(_data({**_base(model), "choices": [], "usage": USAGE}))
    out.append(b"data: [DONE]\n\n")
    return out


def error_reply(status: int, text: str) -> Reply:
    """An OpenAI-style error answer."""
    error = {"message": text, "type": "invalid_request_error", "param": None, "code": None}
    return Reply(status=status, json={"error": error})


def _call_deltas(index: int, call: dict[str, Any]) -> list[dict[str, Any]]:
    name, raw = call["function"]["name"], call["function"]["arguments"]
    half = len(raw) // 2
    start = {"index": index, "id": call["id"], "type": "function"}
    return [
        {"tool_calls": [{**start, "function": {"name": name, "arguments": ""}}]},
        {"tool_calls": [{"index": index, "function": {"arguments": raw[:half]}}]},
        {"tool_calls": [{"index": index, "function": {"arguments": raw[half:]}}]},
    ]


def _finish(calls: list[dict[str, Any]]) -> str:
    return "tool_calls" if calls else "stop"


def _base(model: str) -> dict[str, Any]:
    return {"id": "chatcmpl-e2e", "object": "chat.completion.chunk", "created": 0, "model": model}


def _chunk(model: str, choice: dict[str, Any]) -> bytes:
    return _data({**_base(model), "choices": [choice]})


def _data(payload: dict[str, Any]) -> bytes:
    return b"data: " + orjson.dumps(payload) + b"\n\n"
