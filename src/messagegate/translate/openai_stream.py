"""OpenAI chat.completion.chunk stream -> Anthropic Messages stream events (a pure state machine).

Anthropic content blocks cannot interleave; OpenAI tool calls can (by index). So one block is
open and streams live, and content for anything else waits in a queue in order of first
appearance. An open text or thinking block gives way as soon as something else is queued. An
open tool call keeps its block until its arguments form a complete JSON object (nothing more can
be added to it) or the answer finishes; then the queue is flushed in order, each queued block
sent whole. In the usual upstream order (reasoning, text, tool 0, tool 1, ...) everything
streams live. No delta ever follows a block's ``content_block_stop``, and indexes are
consecutive. Arguments pass through ``JsonPrefix``, so the client only accumulates JSON that
parses, and the same input a non-streaming answer would carry.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Literal, NamedTuple

import orjson

from messagegate.api.envelope import error_payload
from messagegate.api.sse import (
    TEXT_DELTA_TAIL,
    Event,
    encode_event,
    encode_text_delta,
    text_delta_head,
)
from messagegate.api.usage import Usage
from messagegate.errors import GatewayError, UpstreamProtocolError
from messagegate.translate.json_prefix import JsonPrefix
from messagegate.translate.openai_errors import classify_error_object
from messagegate.translate.openai_request import OpenAIRequest
from messagegate.translate.openai_rules import (
    FAILED_FINISH_REASON,
    Block,
    estimate_output_tokens,
    load_arguments,
    message_texts,
    message_tool_calls,
    new_message_id,
    reported_usage,
    stop_reason_for,
)
from messagegate.translate.signatures import gateway_signature
from messagegate.translate.tool_ids import ToolNames, client_tool_id

BlockKind = Literal["thinking", "text", "tool_use"]


@dataclass(slots=True, eq=False)
class _ToolCall:
    upstream_id: str | None
    client_id: str
    name: str | None = None
    arguments: JsonPrefix = field(default_factory=JsonPrefix)

    def take(self, function: dict[str, Any], names: ToolNames) -> str:
        """Record a delta's name (the first one wins); return the arguments JSON released."""
        name = function.get("name")
        if name and isinstance(name, str) and self.name is None:
            self.name = names.client(name)
        arguments = function.get("arguments")
        return self.arguments.feed(arguments) if isinstance(arguments, str) else ""


@dataclass(slots=True, eq=False)
class _Block:
    """One Anthropic content block: queued, then open (with an index), then closed."""

    kind: BlockKind
    texts: list[str] = field(default_factory=list)
    tool: _ToolCall | None = None
    state: Literal["new", "queued", "open", "closed"] = "new"
    index: int = -1

    def can_yield(self) -> bool:
        """Whether closing now loses nothing: a tool call only once its JSON is complete."""
        return self.tool is None or self.tool.arguments.complete


# The keys of a delta that only continues the text ("role" is repeated by some servers).
_TEXT_ONLY_KEYS = frozenset({"content", "role"})
_CONTENT_KEY = b'"content":'
# What a JSON string's bytes must not hold to be its text's UTF-8 as they are (no escapes).
_ESCAPED = re.compile(rb'[\x00-\x1f"\\]')


def _plain_text(data: bytes, first: int, last: int) -> str | None:
    """The text of the JSON string ``data[first:last]`` when its bytes are the text's UTF-8 as
    they are (no escapes) and it is not empty; else None."""
    if (
        last - first < 3
        or data[first] != 0x22
        or data[last - 1] != 0x22
        or _ESCAPED.search(data, first + 1, last - 1) is not None
    ):
        return None
    try:
        return data[first + 1 : last - 1].decode()
    except UnicodeDecodeError:
        return None


class _TextTemplate(NamedTuple):
    """The bytes of a ``data:`` event that only added text to `block`, around the text's string.

    An event with the same bytes around another plain JSON string is the same chunk with another
    text: replacing one whole string token changes nothing else of what the JSON says.
    """

    block: _Block
    prefix: bytes
    suffix: bytes
    # The client bytes of a text delta of `block` before its text.
    head: bytes


class OpenAIStreamTranslator:
    """Feed parsed OpenAI SSE chunks in, get Anthropic events out; ``finish`` when it ends.

    ``usage`` holds the final counts (``usage.estimated`` when the upstream reported none) and
    ``error`` the failure an ``error`` event reported, if any.
    """

    def __init__(self, *, model: str, request: OpenAIRequest, input_tokens: int) -> None:
        self.model = model
        self.usage = Usage(input_tokens=max(input_tokens, 1))
        self.usage_reported = False
        self.error: GatewayError | None = None
        self._request = request
        self._started = False
        self._ended = False
        self._finish_reason: str | None = None
        self._matched_stop: Any = None
        self._open: _Block | None = None
        self._queue: list[_Block] = []
        self._next_index = 0
        self._content: list[Block] = []
        self._tools_by_index: dict[Any, tuple[_Block, _ToolCall]] = {}
        self._tools_by_id: dict[str, tuple[_Block, _ToolCall]] = {}
        self._last_tool: tuple[_Block, _ToolCall] | None = None
        self._text_template: _TextTemplate | None = None

    # --- the interface ---------------------------------------------------------------------

    def feed(self, chunk: dict[str, Any]) -> list[Event]:
        """Events for one ``data:`` chunk of the upstream stream."""
        more = self._more_text(chunk)
        if more is not None:
            return [_text_delta(*more)]
        return self._feed(chunk)

    def feed_sse(self, chunk: dict[str, Any], event: bytes | None = None) -> bytes:
        """``feed``'s events framed for the client; the usual chunk's bytes skip the event.

        `event`, the ``data: ...`` event the chunk was parsed from, lets ``feed_text_event``
        take the next such chunks from their bytes.
        """
        more = self._more_text(chunk)
        if more is not None:
            if event is not None:
                self._learn_text_event(event, more[1])
            return encode_text_delta(*more)
        was_open = self._open
        sent = b"".join([encode_event(name, data) for name, data in self._feed(chunk)])
        if event is not None and self._open is not was_open:
            # A chunk that opened a text block with its text alone teaches the template already.
            text = self._text_only(chunk)
            if text is not None:
                self._learn_text_event(event, text)
        return sent

    def feed_text_event(self, event: bytes) -> bytes | None:
        """``feed_sse`` of a ``data: {...}`` event that only adds text to the open text block,
        recognised by its bytes, without parsing it; None when it may be anything else (bytes
        of several events included: their line breaks are not a plain string's)."""
        template = self._text_template
        if (
            template is None
            or not event.endswith(template.suffix)
            or not event.startswith(template.prefix)
            or template.block is not self._open
            or self._queue
            or self._ended
        ):
            return None
        first, last = len(template.prefix), len(event) - len(template.suffix)
        text = _plain_text(event, first, last)
        if text is None:
            return None
        template.block.texts.append(text)
        return b"".join((template.head, event[first:last], TEXT_DELTA_TAIL))

    def feed_text_run(self, chunk: bytes, start: int) -> tuple[bytes, int]:
        """``feed_text_event`` of each of the text events that follow one another in a chunk
        of whole events from `start`, in one loop: their client bytes, and where they end
        (`start` when no such event is there)."""
        template = self._text_template
        if template is None or template.block is not self._open or self._queue or self._ended:
            return b"", start
        block, prefix, suffix, head = template
        strings: list[bytes] = []
        while chunk.startswith(prefix, start):
            newline = chunk.find(b"\n", start)
            # One line, and the suffix ends it with the blank line.
            if newline < 0 or not chunk.endswith(suffix, start, newline + 2):
                break
            first, last = start + len(prefix), newline + 2 - len(suffix)
            text = _plain_text(chunk, first, last)
            if text is None:
                break
            block.texts.append(text)
            strings.append(chunk[first:last])
            start = newline + 2
        if not strings:
            return b"", start
        # Each client event is the head, the text's JSON string as it came, the tail.
        return b"".join((head, (TEXT_DELTA_TAIL + head).join(strings), TEXT_DELTA_TAIL)), start

    def _learn_text_event(self, event: bytes, text: str) -> None:
        """Remember the bytes around the text of an event that only added text."""
        literal = orjson.dumps(text)
        at = event.find(_CONTENT_KEY)
        start = at + len(_CONTENT_KEY)
        # One "content" key, and its value's bytes are the text's: else no template.
        if at < 0 or event.find(_CONTENT_KEY, start) >= 0 or not event.startswith(literal, start):
            self._text_template = None
            return
        assert self._open is not None
        end = start + len(literal)
        self._text_template = _TextTemplate(
            self._open, event[:start], event[end:], text_delta_head(self._open.index)
        )

    def finish(self, *, saw_done: bool) -> list[Event]:
        """The upstream stream ended; ``saw_done`` says whether it sent ``[DONE]``."""
        if self._ended:
            return []
        if self._finish_reason is None:
            return self._fail(UpstreamProtocolError(_unfinished_message(self._started, saw_done)))
        self._ended = True
        if not self.usage_reported:
            self.usage.output_tokens = estimate_output_tokens(self._content)
            self.usage.estimated = True
        return [self._message_delta(), ("message_stop", {"type": "message_stop"})]

    @property
    def content(self) -> list[Block]:
        """The content blocks closed so far, as a non-streaming answer would hold them."""
        return list(self._content)

    # --- chunks --------------------------------------------------------------------------------

    def _more_text(self, chunk: Any) -> tuple[int, str] | None:
        """(index, text) of the usual chunk: only more text for the open text block.

        The text is added to the block here. Any other chunk changes nothing and gives None.
        """
        text = self._text_only(chunk)
        if text is None:
            return None
        block = self._open
        assert block is not None
        block.texts.append(text)
        return block.index, text

    def _text_only(self, chunk: Any) -> str | None:
        """The text of a chunk that only adds text to the open text block; None for any other."""
        block = self._open
        if block is None or block.kind != "text" or self._queue or self._ended:
            return None
        if not isinstance(chunk, dict) or chunk.get("error") or chunk.get("object") == "error":
            return None
        if chunk.get("usage") or "x_groq" in chunk:
            return None  # usage to record
        choices = chunk.get("choices")
        if type(choices) is not list or len(choices) != 1:
            return None
        choice = choices[0]
        if not isinstance(choice, dict) or choice.get("finish_reason") is not None:
            return None
        delta = choice.get("delta")
        if not isinstance(delta, dict) or choice.get("index", 0) != 0:
            return None
        text = delta.get("content")
        if type(text) is not str or not text:
            return None
        if len(delta) > 1 and not _TEXT_ONLY_KEYS.issuperset(delta):
            return None
        return text

    def _feed(self, chunk: dict[str, Any]) -> list[Event]:
        """Any chunk, the general way."""
        if self._ended:
            return []
        if not isinstance(chunk, dict):
            return self._fail(
                UpstreamProtocolError("the upstream sent a chunk that is not an object")
            )
        if chunk.get("error") or chunk.get("object") == "error":
            return self._fail(classify_error_object(chunk))
        self._record_usage(chunk)
        events = [] if self._started else [self._message_start()]
        self._started = True
        for choice in chunk.get("choices") or ():
            if isinstance(choice, dict) and choice.get("index", 0) == 0:
                events += self._choice(choice)
        return events

    def _choice(self, choice: dict[str, Any]) -> list[Event]:
        if self._finish_reason is not None:
            return []  # nothing may follow the blocks' stops
        delta = choice.get("delta")
        if not isinstance(delta, dict):
            delta = {}
        reasoning, text = message_texts(delta)
        events = self._add_text("thinking", reasoning) + self._add_text("text", text)
        for call in message_tool_calls(delta):
            events += self._add_tool_delta(call)
        return events + self._choice_finished(choice)

    def _choice_finished(self, choice: dict[str, Any]) -> list[Event]:
        finish_reason = choice.get("finish_reason")
        if finish_reason == FAILED_FINISH_REASON:
            return self._fail(UpstreamProtocolError(_FAILED_MESSAGE))
        if not finish_reason:
            return []
        self._finish_reason = str(finish_reason)
        self._matched_stop = choice.get("stop_reason")  # vLLM: the stop string that matched
        return self._advance(final=True)

    def _record_usage(self, chunk: dict[str, Any]) -> None:
        usage = reported_usage(chunk)
        if usage is not None:
            self.usage.update(usage)
            self.usage_reported = True

    def _add_text(self, kind: BlockKind, text: str) -> list[Event]:
        if not text:
            return []  # no block is ever started for, or sent, an empty text
        if self._open is not None and self._open.kind == kind:
            self._open.texts.append(text)
            return [_delta(self._open, text)]
        last = self._queue[-1] if self._queue else None
        if last is not None and last.kind == kind:
            last.texts.append(text)
        else:
            self._enqueue(_Block(kind, [text]))
        return self._advance()

    def _add_tool_delta(self, call: dict[str, Any]) -> list[Event]:
        block, tool = self._tool_block(call)
        function = call.get("function")
        released = tool.take(
            function if isinstance(function, dict) else {}, self._request.tool_names
        )
        events: list[Event] = []
        if released and block.state != "closed":
            block.texts.append(released)
            if block.state == "open":
                events.append(_delta(block, released))
        if block.state == "new":
            self._enqueue(block)
        return events + self._advance()

    def _tool_block(self, call: dict[str, Any]) -> tuple[_Block, _ToolCall]:
        """The block a tool-call delta belongs to; a new id at a known index is a new call."""
        index, upstream_id = call.get("index"), call.get("id") or None
        known = self._tools_by_id.get(upstream_id) if upstream_id is not None else None
        if known is None:
            known = self._tools_by_index.get(index) if index is not None else self._last_tool
            # Ollama reuses an index for the next call; only a new id tells them apart.
            if known is not None and upstream_id is not None and known[1].upstream_id:
                known = None
        return known or self._new_tool(index, upstream_id)

    def _new_tool(self, index: Any, upstream_id: str | None) -> tuple[_Block, _ToolCall]:
        tool = _ToolCall(upstream_id, client_tool_id(upstream_id))
        entry = (_Block("tool_use", tool=tool), tool)
        self._tools_by_index[index] = entry
        if upstream_id is not None:
            self._tools_by_id[upstream_id] = entry
        self._last_tool = entry
        return entry

    # --- blocks --------------------------------------------------------------------------------

    def _enqueue(self, block: _Block) -> None:
        block.state = "queued"
        self._queue.append(block)

    def _advance(self, *, final: bool = False) -> list[Event]:
        """Start queued blocks while the open one can give way; on ``final`` close them all."""
        events: list[Event] = []
        while self._queue:
            head = self._queue[0]
            if self._open is not None and not (final or self._open.can_yield()):
                break
            if head.tool is not None and head.tool.name is None and not final:
                break  # a tool_use block cannot start before its name is known
            events += self._close_open()
            events += self._start(self._queue.pop(0))
        if final:
            events += self._close_open()
        return events

    def _start(self, block: _Block) -> list[Event]:
        block.state, block.index = "open", self._next_index
        self._next_index += 1
        self._open = block
        start = {
            "type": "content_block_start",
            "index": block.index,
            "content_block": _empty_block(block),
        }
        events: list[Event] = [("content_block_start", start)]
        if block.texts:
            events.append(_delta(block, "".join(block.texts)))
        return events

    def _close_open(self) -> list[Event]:
        block, self._open = self._open, None
        if block is None:
            return []
        final = _final_block(block)
        events = _last_deltas(block, final)
        block.state = "closed"
        self._content.append(final)
        stop = {"type": "content_block_stop", "index": block.index}
        return [*events, ("content_block_stop", stop)]

    # --- message events ------------------------------------------------------------------------

    def _message_start(self) -> Event:
        message: dict[str, Any] = {
            "id": new_message_id(),
            "type": "message",
            "role": "assistant",
            "model": self.model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": self._usage_fields() | {"output_tokens": 1},
        }
        return ("message_start", {"type": "message_start", "message": message})

    def _message_delta(self) -> Event:
        stop_reason, stop_sequence = stop_reason_for(
            self._finish_reason,
            matched=self._matched_stop,
            text="".join(b["text"] for b in self._content if b["type"] == "text"),
            has_tool_use=any(b["type"] == "tool_use" for b in self._content),
            stop_sequences=self._request.stop_sequences,
        )
        delta = {"stop_reason": stop_reason, "stop_sequence": stop_sequence}
        usage = self._usage_fields()
        return ("message_delta", {"type": "message_delta", "delta": delta, "usage": usage})

    def _usage_fields(self) -> dict[str, int]:
        return {
            "input_tokens": self.usage.input_tokens,
            "output_tokens": self.usage.output_tokens,
            "cache_read_input_tokens": self.usage.cache_read_input_tokens,
            "cache_creation_input_tokens": self.usage.cache_creation_input_tokens,
        }

    def _fail(self, error: GatewayError) -> list[Event]:
        """End with an ``error`` event: never a made-up end_turn or message_stop."""
        self._ended = True
        self.error = error
        return [("error", error_payload(error.error_type, error.message))]


_FAILED_MESSAGE = "the upstream stopped generating with finish_reason 'error'"


def _unfinished_message(started: bool, saw_done: bool) -> str:
    if not started:
        return "the upstream's stream ended without sending anything"
    if saw_done:
        return "the upstream's stream ended ([DONE]) without a finish_reason"
    return "the upstream's stream ended before the answer finished"


def _empty_block(block: _Block) -> dict[str, Any]:
    if block.kind == "thinking":
        return {"type": "thinking", "thinking": "", "signature": ""}
    if block.tool is not None:
        tool = block.tool
        return {"type": "tool_use", "id": tool.client_id, "name": tool.name or "", "input": {}}
    return {"type": "text", "text": ""}


def _last_deltas(block: _Block, final: Block) -> list[Event]:
    """A thinking block's signature; what closes a tool call's JSON (and its parsed input)."""
    if block.kind == "thinking":
        final["signature"] = gateway_signature()
        return [_signature_delta(block.index, final["signature"])]
    if block.tool is None or not block.texts:
        return []
    completion = block.tool.arguments.completion()
    if completion:
        block.texts.append(completion)
    final["input"] = load_arguments("".join(block.texts))
    return [_delta(block, completion)] if completion else []


def _final_block(block: _Block) -> Block:
    final = _empty_block(block)
    if block.kind == "text":
        final["text"] = "".join(block.texts)
    elif block.kind == "thinking":
        final["thinking"] = "".join(block.texts)
    return final


def _delta(block: _Block, text: str) -> Event:
    if block.kind == "text":
        return _text_delta(block.index, text)
    if block.kind == "thinking":
        delta = {"type": "thinking_delta", "thinking": text}
    else:
        delta = {"type": "input_json_delta", "partial_json": text}
    return (
        "content_block_delta",
        {"type": "content_block_delta", "index": block.index, "delta": delta},
    )


def _text_delta(index: int, text: str) -> Event:
    delta = {"type": "text_delta", "text": text}
    return ("content_block_delta", {"type": "content_block_delta", "index": index, "delta": delta})


def _signature_delta(index: int, signature: str) -> Event:
    delta = {"type": "signature_delta", "signature": signature}
    return ("content_block_delta", {"type": "content_block_delta", "index": index, "delta": delta})
