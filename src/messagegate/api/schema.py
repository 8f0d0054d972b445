"""Structural validation of Messages API requests, with errors that name the offending field.

The request stays a plain dict (so unknown fields pass through to Anthropic-native upstreams);
msgspec checks it against the structs below. Content blocks are checked one by one against the
struct of their ``type``; block types we do not know are left for the upstream to judge.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal, TypeVar

import msgspec

from messagegate.config.problems import location
from messagegate.config.routing_fields import RoutingFields
from messagegate.errors import InvalidRequest


class TextBlock(msgspec.Struct):
    type: Literal["text"]
    text: str


class Base64Source(msgspec.Struct):
    type: Literal["base64"]
    media_type: str
    data: str


class UrlSource(msgspec.Struct):
    type: Literal["url"]
    url: str


class ImageBlock(msgspec.Struct):
    type: Literal["image"]
    source: dict[str, Any]


class DocumentBlock(msgspec.Struct):
    type: Literal["document"]
    source: dict[str, Any]


class ToolUseBlock(msgspec.Struct):
    type: Literal["tool_use"]
    id: str
    name: str
    input: dict[str, Any]


class ToolResultBlock(msgspec.Struct):
    type: Literal["tool_result"]
    tool_use_id: str
    content: str | list[dict[str, Any]] | None = None
    is_error: bool | None = None


class ThinkingBlock(msgspec.Struct):
    type: Literal["thinking"]
    thinking: str
    signature: str | None = None


class RedactedThinkingBlock(msgspec.Struct):
    type: Literal["redacted_thinking"]
    data: str


class Message(msgspec.Struct):
    role: Literal["user", "assistant", "system"]
    content: str | list[dict[str, Any]]


class Tool(msgspec.Struct):
    name: str
    type: str | None = None
    description: str | None = None
    input_schema: dict[str, Any] | None = None


class ToolChoice(msgspec.Struct):
    type: Literal["auto", "any", "tool", "none"]
    name: str | None = None
    disable_parallel_tool_use: bool | None = None


class Thinking(msgspec.Struct):
    type: Literal["enabled", "disabled", "adaptive"]
    budget_tokens: int | None = None


class Metadata(msgspec.Struct):
    user_id: str | None = None


class CountTokensRequest(RoutingFields, kw_only=True):
    # May be missing only so that `request_defaults` can fill it (server/request_defaults.py).
    model: str | None = None
    messages: list[Message]
    system: str | list[TextBlock] | None = None
    tools: list[Tool] | None = None
    tool_choice: ToolChoice | None = None
    thinking: Thinking | None = None


class MessagesRequest(CountTokensRequest, kw_only=True):
    max_tokens: Annotated[int, msgspec.Meta(ge=1)] | None = None
    stream: bool = False
    stop_sequences: list[str] | None = None
    temperature: Annotated[float, msgspec.Meta(ge=0, le=2)] | None = None
    top_p: Annotated[float, msgspec.Meta(ge=0, le=1)] | None = None
    top_k: Annotated[int, msgspec.Meta(ge=0)] | None = None
    metadata: Metadata | None = None
    output_config: dict[str, Any] | None = None
    # The structured-outputs beta's name for output_config.format.
    output_format: dict[str, Any] | None = None
    context_management: dict[str, Any] | None = None
    service_tier: str | None = None


_BLOCK_TYPES: dict[str, type[msgspec.Struct]] = {
    "text": TextBlock,
    "image": ImageBlock,
    "document": DocumentBlock,
    "tool_use": ToolUseBlock,
    "tool_result": ToolResultBlock,
    "thinking": ThinkingBlock,
    "redacted_thinking": RedactedThinkingBlock,
}
_SOURCE_TYPES: dict[str, type[msgspec.Struct]] = {"base64": Base64Source, "url": UrlSource}
_T = TypeVar("_T")
_MISSING = re.compile(r"Object missing required field `([^`]+)`")


def parse_messages_request(body: object) -> MessagesRequest:
    """Validate a decoded ``POST /v1/messages`` body; raise InvalidRequest naming the field."""
    request = _convert(body, MessagesRequest)
    _check_request(request)
    return request


def parse_count_tokens_request(body: object) -> CountTokensRequest:
    request = _convert(body, CountTokensRequest)
    _check_request(request)
    return request


def _convert(body: object, struct: type[_T]) -> _T:
    if not isinstance(body, dict):
        raise InvalidRequest("request body must be a JSON object")
    try:
        return msgspec.convert(body, struct)
    except msgspec.ValidationError as exc:
        raise InvalidRequest(describe_error(str(exc))) from None


def _check_request(request: CountTokensRequest) -> None:
    if not request.messages:
        # Anthropic's own answer to an empty list (a 400, not an empty completion).
        raise InvalidRequest("messages: at least one message is required")
    for i, message in enumerate(request.messages):
        if isinstance(message.content, list):
            _check_blocks(message.content, f"messages.{i}.content")
    for i, tool in enumerate(request.tools or ()):
        if tool.type in (None, "custom") and tool.input_schema is None:
            raise InvalidRequest(f"tools.{i}.input_schema: Field required")


def _check_blocks(blocks: list[dict[str, Any]], path: str) -> None:
    for j, block in enumerate(blocks):
        where = f"{path}.{j}"
        block_type = block.get("type")
        if not isinstance(block_type, str):
            raise InvalidRequest(f"{where}.type: Field required")
        struct = _BLOCK_TYPES.get(block_type)
        if struct is None:
            continue
        checked = _convert_at(block, struct, where)
        if isinstance(checked, ImageBlock | DocumentBlock):
            _check_source(checked.source, f"{where}.source")
        elif isinstance(checked, ToolResultBlock) and isinstance(checked.content, list):
            _check_blocks(checked.content, f"{where}.content")


def _check_source(source: dict[str, Any], path: str) -> None:
    struct = _SOURCE_TYPES.get(source.get("type", ""))
    if struct is not None:
        _convert_at(source, struct, path)


def _convert_at(value: dict[str, Any], struct: type[msgspec.Struct], path: str) -> msgspec.Struct:
    try:
        return msgspec.convert(value, struct)
    except msgspec.ValidationError as exc:
        raise InvalidRequest(describe_error(str(exc), prefix=path)) from None


def describe_error(text: str, prefix: str = "") -> str:
    """Turn msgspec's ``Expected `int`, got `str` - at `$.a[0].b``` into ``a.0.b: Expected ...``."""
    what, path = location(text)
    missing = _MISSING.fullmatch(what)
    if missing:
        path = f"{path}.{missing.group(1)}" if path else missing.group(1)
        what = "Field required"
    full = ".".join(part for part in (prefix, path) if part)
    return f"{full}: {what}" if full else what
