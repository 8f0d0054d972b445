"""OpenAI Chat Completions answer -> Anthropic Message, and the rules the stream shares with it.

Tool-call arguments that are not valid JSON (a model's slip, or an answer cut off by max_tokens)
never fail the answer. ``JsonPrefix`` keeps the longest prefix that is the start of a JSON object
and appends what closes it: ``{"path": "a.py", "content": "de`` becomes
``{"path": "a.py", "content": "de"}``. A member whose value never started is left out, and
arguments that are not a JSON object at all give ``{}``. The stream forwards exactly the text this
machine releases, so a streamed and a non-streamed answer always carry the same input.
"""

from __future__ import annotations

import json
import random
import re
from collections.abc import Callable, Iterable
from typing import Any, ClassVar

import orjson

from messagegate.errors import UpstreamProtocolError
from messagegate.translate.openai_errors import classify_error_object
from messagegate.translate.openai_request import OpenAIRequest
from messagegate.translate.signatures import gateway_signature
from messagegate.translate.token_count import count_text
from messagegate.translate.tool_ids import ToolNames, client_tool_id

Block = dict[str, Any]

_FINISH_REASONS = {
    "stop": "end_turn",
    "length": "max_tokens",
    "model_length": "max_tokens",  # Mistral: the context window is full
    "tool_calls": "tool_use",
    "function_call": "tool_use",
    "content_filter": "refusal",
}
# Mistral's finish_reason when generation broke off; reporting end_turn would hide it.
FAILED_FINISH_REASON = "error"


def to_anthropic_message(
    response: dict[str, Any], *, model: str, request: OpenAIRequest, input_tokens: int = 0
) -> dict[str, Any]:
    """A non-streaming answer as a Message; ``input_tokens`` counts when usage is missing.

    Raises a GatewayError only when the answer holds no answer at all (no choices, or an error).
    """
    choice = _first_choice(response)
    message = choice.get("message")
    message = message if isinstance(message, dict) else {}
    reasoning, text = message_texts(message)
    calls = [tool_use_block(call, request.tool_names) for call in message_tool_calls(message)]
    content = [*reasoning_blocks(reasoning), *([text_block(text)] if text else []), *calls]
    stop_reason, stop_sequence = stop_reason_for(
        choice.get("finish_reason"),
        matched=choice.get("stop_reason"),
        text=text,
        has_tool_use=bool(calls),
        stop_sequences=request.stop_sequences,
    )
    usage = reported_usage(response)
    return {
        "id": new_message_id(),
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": stop_reason,
        "stop_sequence": stop_sequence,
        "usage": estimated_usage(input_tokens, content) if usage is None else usage,
    }


def _first_choice(response: dict[str, Any]) -> dict[str, Any]:
    choices = response.get("choices")
    if not choices or not isinstance(choices[0], dict):
        if response.get("error") or response.get("object") == "error":
            raise classify_error_object(response)
        raise UpstreamProtocolError("the upstream's answer has no choices")
    choice: dict[str, Any] = choices[0]
    if choice.get("finish_reason") == FAILED_FINISH_REASON:
        raise UpstreamProtocolError("the upstream stopped with finish_reason 'error'")
    return choice


def new_message_id() -> str:
    """Unique, not secret, so no syscall for randomness."""
    return f"msg_{random.getrandbits(96):024x}"


# --- content ------------------------------------------------------------------------------------


def message_texts(message: dict[str, Any]) -> tuple[str, str]:
    """(reasoning, text) of a message or a stream delta, whatever the server's fields."""
    reasoning = _string(message.get("reasoning_content")) or _string(message.get("reasoning"))
    content = message.get("content")
    text = _string(content)
    if isinstance(content, list):
        # Mistral's reasoning models answer with typed parts: thinking, then text.
        more_reasoning, text = _content_parts(content)
        reasoning += more_reasoning
    return reasoning, text + _string(message.get("refusal"))


def _content_parts(parts: list[Any]) -> tuple[str, str]:
    reasoning: list[str] = []
    text: list[str] = []
    for part in parts:
        if not isinstance(part, dict):
            continue
        if part.get("type") == "text":
            text.append(_string(part.get("text")))
        elif part.get("type") == "thinking":
            thinking = part.get("thinking")
            reasoning.append(
                _content_parts(thinking)[1] if isinstance(thinking, list) else _string(thinking)
            )
    return "".join(reasoning), "".join(text)


def _string(value: Any) -> str:
    return value if isinstance(value, str) else ""


def reasoning_blocks(reasoning: str) -> list[Block]:
    if not reasoning:
        return []
    return [{"type": "thinking", "thinking": reasoning, "signature": gateway_signature()}]


def text_block(text: str) -> Block:
    return {"type": "text", "text": text}


def message_tool_calls(message: dict[str, Any]) -> list[dict[str, Any]]:
    """The message's tool calls; a legacy ``function_call`` counts as one without an id."""
    calls = [c for c in message.get("tool_calls") or () if isinstance(c, dict)]
    legacy = message.get("function_call")
    if isinstance(legacy, dict):
        calls.append({"function": legacy})
    return calls


def tool_use_block(call: dict[str, Any], names: ToolNames) -> Block:
    function = call.get("function")
    function = function if isinstance(function, dict) else {}
    return {
        "type": "tool_use",
        "id": client_tool_id(call.get("id")),
        "name": names.client(_string(function.get("name"))),
        "input": parse_arguments(function.get("arguments")),
    }


# --- stop reason and usage ----------------------------------------------------------------------


def stop_reason_for(
    finish_reason: Any,
    *,
    matched: Any,
    text: str,
    has_tool_use: bool,
    stop_sequences: tuple[str, ...],
) -> tuple[str, str | None]:
    """(stop_reason, stop_sequence) for an upstream's finish_reason and what it produced."""
    reason = _FINISH_REASONS.get(finish_reason, "end_turn")
    if reason == "tool_use" and not has_tool_use:
        reason = "end_turn"
    elif reason == "end_turn" and has_tool_use:
        reason = "tool_use"  # Ollama and llama.cpp say "stop" after calling tools
    if reason != "end_turn":
        return reason, None
    sequence = _matched_stop_sequence(matched, text, stop_sequences)
    return ("stop_sequence", sequence) if sequence is not None else ("end_turn", None)


def _matched_stop_sequence(matched: Any, text: str, stop_sequences: tuple[str, ...]) -> str | None:
    # vLLM names the stop string in choices[].stop_reason (an int there is a stop token id).
    if isinstance(matched, str) and matched in stop_sequences:
        return matched
    # Most servers strip the sequence from the text; the few that keep it show which one it was.
    return next((s for s in stop_sequences if s and text.endswith(s)), None)


def reported_usage(answer: dict[str, Any]) -> dict[str, int] | None:
    """The Anthropic usage of an answer or chunk, if it reports one (Groq: under ``x_groq``)."""
    groq = answer.get("x_groq")
    usage = answer.get("usage") or (groq.get("usage") if isinstance(groq, dict) else None)
    if isinstance(usage, dict) and usage.get("prompt_tokens"):
        return anthropic_usage(usage)
    return None


def anthropic_usage(usage: dict[str, Any]) -> dict[str, int]:
    """An OpenAI usage object as Anthropic counts it: input excludes the cached prefix."""
    prompt = _count(usage.get("prompt_tokens"))
    cached = min(_cached_tokens(usage), prompt)
    return {
        "input_tokens": prompt - cached,
        "output_tokens": _count(usage.get("completion_tokens")),
        "cache_read_input_tokens": cached,
        "cache_creation_input_tokens": 0,
    }


def _cached_tokens(usage: dict[str, Any]) -> int:
    details = usage.get("prompt_tokens_details")
    if isinstance(details, dict) and details.get("cached_tokens"):
        return _count(details["cached_tokens"])
    return _count(usage.get("prompt_cache_hit_tokens"))  # DeepSeek's name for it


def _count(value: Any) -> int:
    return value if isinstance(value, int) and value > 0 else 0


def estimated_usage(input_tokens: int, content: Iterable[Block]) -> dict[str, int]:
    """Usage for an upstream that reported none: output counted locally from the content."""
    return {
        "input_tokens": input_tokens,
        "output_tokens": estimate_output_tokens(content),
        "cache_read_input_tokens": 0,
        "cache_creation_input_tokens": 0,
    }


def estimate_output_tokens(content: Iterable[Block]) -> int:
    return count_text("".join(_block_text(block) for block in content))


def _block_text(block: Block) -> str:
    if block["type"] == "tool_use":
        return str(block["name"]) + orjson.dumps(block["input"]).decode()
    return str(block.get("text") or block.get("thinking") or "")


# --- tool-call arguments ------------------------------------------------------------------------


def parse_arguments(arguments: Any) -> dict[str, Any]:
    """A tool call's input from its arguments (see the module docstring for broken JSON)."""
    if isinstance(arguments, dict):
        return arguments  # a few servers send the object itself
    if not isinstance(arguments, str):
        return {}
    try:
        # Usually the arguments are whole JSON: JsonPrefix (a Python loop per character) would
        # release all of it, so parsing it directly gives the same input.
        value = orjson.loads(arguments)
    except orjson.JSONDecodeError:
        value = None
    if isinstance(value, dict):
        return value
    return load_arguments(repaired_arguments(arguments))


def repaired_arguments(arguments: str) -> str:
    """The JSON text the client is given for these arguments ("" when there is no object)."""
    prefix = JsonPrefix()
    released = prefix.feed(arguments)
    return released + prefix.completion() if released else ""


def load_arguments(text: str) -> dict[str, Any]:
    try:
        value = orjson.loads(text) if text else {}
    except orjson.JSONDecodeError:
        return {}  # defensive: JsonPrefix releases only text that parses
    return value if isinstance(value, dict) else {}


_PLAIN_RUN = re.compile(r'[^"\\\x00-\x1f]+')
_ESCAPABLE = frozenset('"\\/bfnrtu')
_HEX_DIGITS = frozenset("0123456789abcdefABCDEF")
_LITERALS = {"t": "true", "f": "false", "n": "null"}
_NUMBER_CHARS = frozenset("0123456789+-.eE")
_NUMBER_PREFIX = re.compile(r"-?(?:(?:0|[1-9]\d*)(?:\.\d*)?(?:(?<=\d)[eE][+-]?\d*)?)?")
_NUMBER = re.compile(r"-?(?:0|[1-9]\d*)(?:\.\d+)?(?:[eE][+-]?\d+)?")
_WHITESPACE = frozenset(" \t\n\r")
_STRING_STATES = frozenset({"string", "escape", "unicode", "low"})


class JsonPrefix:
    """Incrementally accepts the longest prefix of text that starts a JSON object.

    ``feed`` returns the part of its input that is safe to pass on: with ``completion()``
    appended, everything released so far parses. What is not settled yet is held back (a
    member's key until its value starts, a comma until what follows it, half an escape or
    surrogate pair, number or literal); after the object closes, or once the text stops being
    JSON, input is ignored. A lone surrogate escape counts as not JSON: most parsers refuse it.
    """

    _STEPS: ClassVar[dict[str, Callable[[JsonPrefix, str], None]]] = {}

    def __init__(self) -> None:
        self._state = "start"
        self._closers: list[str] = []
        self._held = ""
        self._in_key = False
        self._token = ""  # the number, literal or \u escape being read
        self._high_surrogate = False
        self._dead = False
        self._out: list[str] = []

    @property
    def complete(self) -> bool:
        """The top-level object has closed: nothing further can be added."""
        return self._state == "done"

    def feed(self, text: str) -> str:
        pos = 0
        while pos < len(text) and not self._dead and self._state != "done":
            if self._state == "string":
                run = _PLAIN_RUN.match(text, pos)
                if run is not None:
                    self._emit(run.group())
                    pos = run.end()
                    continue
            self._STEPS[self._state](self, text[pos])
            pos += 1
        released, self._out = "".join(self._out), []
        return released

    def completion(self) -> str:
        """What closes the released text: an open string's quote and the open brackets."""
        in_value_string = self._state in _STRING_STATES and not self._in_key
        return ('"' if in_value_string else "") + "".join(reversed(self._closers))

    def _emit(self, text: str) -> None:
        """String content: a key's waits for its value, a value's goes out (with what's held)."""
        if self._in_key:
            self._held += text
        else:
            self._release(text)

    def _release(self, text: str) -> None:
        self._out.append(self._held + text)
        self._held = ""

    def _die(self) -> None:
        """The text stopped being JSON: drop what is held, keep the state for ``completion``."""
        self._held = ""
        self._dead = True

    def _start(self, ch: str) -> None:
        if ch in _WHITESPACE:
            self._held += ch
        elif ch == "{":
            self._open("{", "}", "object_first")
        else:
            self._die()

    def _open(self, ch: str, closer: str, state: str) -> None:
        self._release(ch)
        self._closers.append(closer)
        self._state = state

    def _close(self, ch: str) -> None:
        if not self._closers or self._closers[-1] != ch:
            self._die()
            return
        self._release(ch)
        self._closers.pop()
        self._state = "after_value" if self._closers else "done"

    def _object_first(self, ch: str) -> None:
        if ch == "}":
            self._close(ch)
        else:
            self._object_next(ch)

    def _object_next(self, ch: str) -> None:
        if ch in _WHITESPACE:
            self._held += ch
        elif ch == '"':
            self._held += ch
            self._in_key, self._state = True, "string"
        else:
            self._die()

    def _string(self, ch: str) -> None:
        if ch == '"':
            self._emit(ch)
            self._state = "colon" if self._in_key else "after_value"
        elif ch == "\\":
            self._held += ch
            self._state = "escape"
        else:
            self._emit(_escaped_control(ch))

    def _escape(self, ch: str) -> None:
        if ch not in _ESCAPABLE or (self._high_surrogate and ch != "u"):
            self._die()
        elif ch == "u":
            self._held += ch
            self._token, self._state = "", "unicode"
        else:
            self._emit(ch)
            self._state = "string"

    def _unicode(self, ch: str) -> None:
        if ch not in _HEX_DIGITS:
            self._die()
            return
        self._held += ch
        self._token += ch
        if len(self._token) == 4:
            self._surrogates(int(self._token, 16))

    def _surrogates(self, code: int) -> None:
        high, low = 0xD800 <= code <= 0xDBFF, 0xDC00 <= code <= 0xDFFF
        if high and not self._high_surrogate:
            self._high_surrogate, self._state = True, "low"  # hold it until its other half
        elif low != self._high_surrogate:
            self._die()
        else:
            self._high_surrogate = False
            self._emit("")
            self._state = "string"

    def _low(self, ch: str) -> None:
        if ch != "\\":
            self._die()
            return
        self._held += ch
        self._state = "escape"

    def _colon(self, ch: str) -> None:
        if ch in _WHITESPACE or ch == ":":
            self._held += ch
            self._state = "value" if ch == ":" else "colon"
        else:
            self._die()

    def _value(self, ch: str) -> None:
        if ch in _WHITESPACE:
            self._held += ch
        elif ch == '"':
            self._release(ch)
            self._in_key, self._state = False, "string"
        elif ch == "{":
            self._open(ch, "}", "object_first")
        elif ch == "[":
            self._open(ch, "]", "array_first")
        elif ch == "-" or ch.isdigit():
            self._token, self._state = "", "number"
            self._number(ch)
        elif ch in _LITERALS:
            self._token, self._state = ch, "literal"
            self._held += ch
        else:
            self._die()

    def _array_first(self, ch: str) -> None:
        if ch == "]":
            self._close(ch)
        else:
            self._value(ch)

    def _number(self, ch: str) -> None:
        candidate = self._token + ch
        if ch in _NUMBER_CHARS and _NUMBER_PREFIX.fullmatch(candidate):
            self._token = candidate
            if _NUMBER.fullmatch(candidate):
                self._release(ch)
            else:
                self._held += ch
        elif _NUMBER.fullmatch(self._token):
            self._state = "after_value"
            self._after_value(ch)
        else:
            self._die()

    def _literal(self, ch: str) -> None:
        expected = _LITERALS[self._token[0]]
        if not expected.startswith(self._token + ch):
            self._die()
            return
        self._token += ch
        self._held += ch
        if self._token == expected:
            self._release("")
            self._state = "after_value"

    def _after_value(self, ch: str) -> None:
        if ch in _WHITESPACE:
            self._release(ch)
        elif ch == ",":
            self._held += ch
            self._state = "object_next" if self._closers[-1] == "}" else "value"
        elif ch in "}]":
            self._close(ch)
        else:
            self._die()


def _escaped_control(ch: str) -> str:
    """Raw control characters are invalid inside JSON strings; some models emit them anyway."""
    return json.dumps(ch)[1:-1] if ch < " " else ch


JsonPrefix._STEPS.update(
    {
        "start": JsonPrefix._start,
        "object_first": JsonPrefix._object_first,
        "object_next": JsonPrefix._object_next,
        "string": JsonPrefix._string,
        "escape": JsonPrefix._escape,
        "unicode": JsonPrefix._unicode,
        "low": JsonPrefix._low,
        "colon": JsonPrefix._colon,
        "value": JsonPrefix._value,
        "array_first": JsonPrefix._array_first,
        "number": JsonPrefix._number,
        "literal": JsonPrefix._literal,
        "after_value": JsonPrefix._after_value,
    }
)
