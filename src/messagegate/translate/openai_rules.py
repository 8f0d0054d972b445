"""The rules an OpenAI answer and its stream share: content, tool arguments, stop reason, usage.

Tool-call arguments that are not valid JSON (a model's slip, or an answer cut off by max_tokens)
never fail the answer. ``JsonPrefix`` keeps the longest prefix that is the start of a JSON object
and appends what closes it: ``{"path": "a.py", "content": "de`` becomes
``{"path": "a.py", "content": "de"}``. A member whose value never started is left out, and
arguments that are not a JSON object at all give ``{}``. The stream forwards exactly the text this
machine releases, so a streamed and a non-streamed answer always carry the same input.
"""

from __future__ import annotations

import random
from collections.abc import Iterable
from typing import Any

import orjson

from messagegate.translate.json_prefix import JsonPrefix
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
