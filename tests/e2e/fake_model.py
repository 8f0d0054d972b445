"""A scripted fake model behind the gateway: it answers each request by what the request holds.

Claude Code sends more than the conversation under test (side requests on the small model, token
counts, a retry without streaming), so the answers cannot be scripted by order. Each request is read
into a `Turn` (model, stream, tools offered, whether it carries a tool result), and the answer is:
the model's planned tool call on a first turn that offers that tool, else a final text.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from fakes import anthropic_script, openai_script
from fakes.upstream import FakeUpstream, Received, Reply

Dialect = Literal["anthropic", "openai"]
FINAL_TEXT = "Done: the file is written."
SIDE_TEXT = "OK"
REJECTION = "messages.0.content: this fake model rejects every request"


@dataclass(frozen=True, slots=True)
class ToolCall:
    """A tool call the fake model makes on a conversation's first turn."""

    name: str
    input: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Turn:
    """What the fake model read from one request, whichever dialect it came in."""

    model: str
    stream: bool
    tools: frozenset[str]
    after_tool_result: bool
    # An OpenAI stream ends with a usage chunk only when the request asks for one.
    usage_chunk: bool = False


@dataclass(frozen=True, slots=True)
class Answer:
    """What the fake model says: a text and at most one tool call."""

    text: str
    call: ToolCall | None = None


class FakeModel:
    """Answers a FakeUpstream's requests by content; `plans` maps upstream model -> tool call."""

    def __init__(
        self, upstream: FakeUpstream, dialect: Dialect, plans: Mapping[str, ToolCall]
    ) -> None:
        self.upstream = upstream
        self.dialect = dialect
        self.plans = dict(plans)
        self.turns: list[Turn] = []
        # Streamed answers still to cut off mid-way, before any content block is complete.
        self.streams_to_break = 0
        # When set, every message request is rejected with this status (an invalid request).
        self.reject_status: int | None = None
        self._ids = itertools.count(1)
        upstream.responder = self.respond

    def turns_of(self, model: str) -> list[Turn]:
        """The message requests that reached this upstream for `model`."""
        return [turn for turn in self.turns if turn.model == model]

    def respond(self, received: Received) -> Reply:
        """The FakeUpstream responder: one reply for one request."""
        if received.method != "POST":
            return Reply(json={})
        if received.path.endswith("/count_tokens"):
            return Reply(json={"input_tokens": 42})
        turn = read_turn(received.json, self.dialect)
        self.turns.append(turn)
        if self.reject_status is not None:
            return self._rejection(self.reject_status)
        reply = self._render(turn, self.answer(turn))
        if turn.stream and self.streams_to_break > 0:
            self.streams_to_break -= 1
            reply.drop_after = _break_point(reply.chunks or [], self.dialect)
        return reply

    def answer(self, turn: Turn) -> Answer:
        """A planned tool call on a first turn that offers its tool; a final text otherwise."""
        call = self.plans.get(turn.model)
        if turn.after_tool_result:
            return Answer(FINAL_TEXT)
        if call is not None and call.name in turn.tools:
            return Answer("I will use a tool.", call)
        return Answer(SIDE_TEXT)

    def _rejection(self, status: int) -> Reply:
        if self.dialect == "openai":
            return openai_script.error_reply(status, REJECTION)
        return anthropic_script.error_reply(status, "invalid_request_error", REJECTION)

    def _render(self, turn: Turn, answer: Answer) -> Reply:
        number = next(self._ids)
        if self.dialect == "openai":
            return _openai_reply(turn, answer, f"call_e2e_{number:02d}")
        return _anthropic_reply(turn, answer, f"toolu_e2e_{number:02d}")


def _break_point(chunks: list[bytes], dialect: Dialect) -> int:
    """Where to drop a stream: after its first text delta, before any block is complete.

    Claude Code falls back to a non-streaming request only when no content block was complete
    when the stream failed; after that it keeps the partial answer and reports the error.
    """
    marker = b"event: content_block_delta" if dialect == "anthropic" else b'"delta":{"content":"I'
    return next(i for i, chunk in enumerate(chunks) if marker in chunk) + 1


def read_turn(body: dict[str, Any], dialect: Dialect) -> Turn:
    """The parts of a Messages or Chat Completions request body the fake model answers by."""
    messages = body.get("messages") or []
    if dialect == "openai":
        tools = frozenset(t["function"]["name"] for t in body.get("tools") or ())
        after = any(m.get("role") == "tool" for m in _since_assistant(messages))
    else:
        tools = frozenset(t["name"] for t in body.get("tools") or ())
        after = any(_has_tool_result(m) for m in _since_assistant(messages))
    usage = bool((body.get("stream_options") or {}).get("include_usage"))
    return Turn(str(body.get("model")), bool(body.get("stream")), tools, after, usage)


def _since_assistant(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The messages after the last assistant turn (what the model is answering)."""
    roles = [m.get("role") for m in messages]
    last = max((i for i, role in enumerate(roles) if role == "assistant"), default=-1)
    return messages[last + 1 :]


def _has_tool_result(message: dict[str, Any]) -> bool:
    content = message.get("content")
    return isinstance(content, list) and any(b.get("type") == "tool_result" for b in content)


def _anthropic_reply(turn: Turn, answer: Answer, call_id: str) -> Reply:
    content: list[dict[str, Any]] = [{"type": "text", "text": answer.text}]
    if answer.call is not None:
        call = answer.call
        content.append({"type": "tool_use", "id": call_id, "name": call.name, "input": call.input})
    stop = "end_turn" if answer.call is None else "tool_use"
    message = anthropic_script.message(content, model=turn.model, stop_reason=stop)
    if turn.stream:
        return anthropic_script.stream_reply(message)
    return anthropic_script.reply(message)


def _openai_reply(turn: Turn, answer: Answer, call_id: str) -> Reply:
    calls = []
    if answer.call is not None:
        calls.append(openai_script.tool_call(call_id, answer.call.name, answer.call.input))
    if turn.stream:
        return Reply(
            chunks=openai_script.chunks(turn.model, answer.text, calls, usage=turn.usage_chunk)
        )
    return Reply(json=openai_script.completion(turn.model, answer.text, calls))
