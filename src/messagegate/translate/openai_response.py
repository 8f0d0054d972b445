"""A whole OpenAI Chat Completions answer -> an Anthropic Message."""

from __future__ import annotations

from typing import Any

from messagegate.errors import UpstreamProtocolError
from messagegate.translate.openai_errors import classify_error_object
from messagegate.translate.openai_request import OpenAIRequest
from messagegate.translate.openai_rules import (
    FAILED_FINISH_REASON,
    estimated_usage,
    message_texts,
    message_tool_calls,
    new_message_id,
    reasoning_blocks,
    reported_usage,
    stop_reason_for,
    text_block,
    tool_use_block,
)


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
