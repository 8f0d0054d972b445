"""Per-provider quirks of OpenAI-compatible servers, and the presets for well-known providers."""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Annotated, Literal

import msgspec

ToolCallIdFormat = Literal["any", "alnum9"]
SystemMessages = Literal["anywhere", "leading_only"]
ReasoningField = Literal["none", "reasoning_content", "reasoning"]


@dataclass(frozen=True, slots=True)
class OpenAIDialect:
    """What one OpenAI-compatible server accepts; each field is a config switch of that name."""

    max_tokens_field: Literal["max_tokens", "max_completion_tokens"] = "max_tokens"
    supports_stream_options: bool = True
    supports_parallel_tool_calls: bool = True
    supports_tool_choice: bool = True
    supports_top_k: bool = False
    # Servers that forbid unknown fields (Mistral answers 422) must not get `user`.
    supports_user: bool = True
    system_messages: SystemMessages = "anywhere"
    tool_call_id_format: ToolCallIdFormat = "any"
    max_tool_name_length: int = 64
    # Where earlier assistant thinking is sent back (DeepSeek needs reasoning_content with tools).
    send_reasoning_as: ReasoningField = "none"


PRESETS: dict[str, OpenAIDialect] = {
    "openai": OpenAIDialect(max_tokens_field="max_completion_tokens"),
    "mistral": OpenAIDialect(
        supports_stream_options=False,
        supports_user=False,
        system_messages="leading_only",
        tool_call_id_format="alnum9",
    ),
    "deepseek": OpenAIDialect(
        supports_parallel_tool_calls=False, send_reasoning_as="reasoning_content"
    ),
    "groq": OpenAIDialect(max_tokens_field="max_completion_tokens"),
    "together": OpenAIDialect(supports_top_k=True),
    "scaleway": OpenAIDialect(),
    "vllm": OpenAIDialect(supports_top_k=True, system_messages="leading_only"),
    "ollama": OpenAIDialect(supports_parallel_tool_calls=False, system_messages="leading_only"),
    "llamacpp": OpenAIDialect(
        supports_top_k=True,
        supports_parallel_tool_calls=False,
        system_messages="leading_only",
    ),
}

DIALECT_FIELDS = frozenset(f.name for f in fields(OpenAIDialect))


class DialectSwitches(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The dialect switches as a provider writes them, beside its other keys; unset: the preset's.
    One field per `OpenAIDialect` field (tests/test_config_schema.py holds them equal)."""

    max_tokens_field: Literal["max_tokens", "max_completion_tokens"] | None = None
    supports_stream_options: bool | None = None
    supports_parallel_tool_calls: bool | None = None
    supports_tool_choice: bool | None = None
    supports_top_k: bool | None = None
    supports_user: bool | None = None
    system_messages: SystemMessages | None = None
    tool_call_id_format: ToolCallIdFormat | None = None
    max_tool_name_length: Annotated[int, msgspec.Meta(ge=1)] | None = None
    send_reasoning_as: ReasoningField | None = None

    def over(self, base: OpenAIDialect) -> OpenAIDialect:
        """`base` with the switches this provider wrote."""
        written = {f: getattr(self, f) for f in DIALECT_FIELDS if getattr(self, f) is not None}
        return replace(base, **written)
