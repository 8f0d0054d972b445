"""Anthropic Messages request -> OpenAI Chat Completions request, for one upstream dialect.

The upstream body is built from an allow-list, so routing fields and Anthropic-only fields
(thinking, output_config, context_management, service_tier, container, mcp_servers, ...) and
every cache_control marker are left behind without being named here.

Documents: a text document (``text`` or ``content`` source) becomes text. A PDF or other binary
document becomes a short textual placeholder: most OpenAI-compatible servers reject the ``file``
content part, and a rejected part would fail every later turn of the conversation that holds it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from messagegate.config.dialect import OpenAIDialect
from messagegate.translate.structured_output import output_format, response_format
from messagegate.translate.tool_ids import ToolNames, upstream_tool_id

Message = dict[str, Any]
Part = dict[str, Any]

# Claude Code's first system block; it changes every request and would defeat prefix caching.
BILLING_HEADER_PREFIX = "x-anthropic-billing-header:"


@dataclass(frozen=True, slots=True)
class OpenAIRequest:
    """The upstream body, and what translating the answer needs to know about the request."""

    payload: dict[str, Any]
    tool_names: ToolNames
    stop_sequences: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class _Context:
    dialect: OpenAIDialect
    names: ToolNames


def to_openai_request(
    body: dict[str, Any],
    *,
    upstream_model: str,
    dialect: OpenAIDialect,
    max_output: int | None = None,
) -> OpenAIRequest:
    """Translate a validated Messages API body for an OpenAI-compatible upstream."""
    tools = _custom_tools(body)
    names = ToolNames.for_tools([tool["name"] for tool in tools], dialect.max_tool_name_length)
    ctx = _Context(dialect, names)
    payload: dict[str, Any] = {"model": upstream_model, "messages": _messages(body, ctx)}
    payload.update(_sampling(body, dialect, max_output))
    payload.update(_tool_fields(tools, body.get("tool_choice"), ctx))
    payload.update(_stream_fields(body, dialect))
    fmt = output_format(body)
    if fmt is not None:
        payload["response_format"] = response_format(fmt)
    return OpenAIRequest(payload, names, tuple(body.get("stop_sequences") or ()))


# --- messages -----------------------------------------------------------------------------------


def _messages(body: dict[str, Any], ctx: _Context) -> list[Message]:
    out: list[Message] = []
    system = system_text(body.get("system"))
    if system:
        out.append({"role": "system", "content": system})
    for message in body["messages"]:
        out.extend(_turn(message, ctx))
    if ctx.dialect.system_messages == "leading_only":
        return _fold_system_messages(out)
    return out


def system_text(system: Any) -> str:
    """The top-level system prompt as one string, without Claude Code's billing header."""
    if isinstance(system, str):
        return system
    texts = [
        block["text"]
        for block in system or ()
        if block.get("text") and not block["text"].startswith(BILLING_HEADER_PREFIX)
    ]
    return "\n\n".join(texts)


def _turn(message: dict[str, Any], ctx: _Context) -> list[Message]:
    role, content = message["role"], message["content"]
    if role == "assistant":
        return _assistant_turn(content, ctx)
    if role == "system":
        text = _joined_text(content)
        return [{"role": "system", "content": text}] if text else []
    return _user_turn(content, ctx)


def _joined_text(content: str | list[dict[str, Any]]) -> str:
    if isinstance(content, str):
        return content
    return "\n\n".join(b["text"] for b in content if b.get("type") == "text" and b["text"])


def _user_turn(content: str | list[dict[str, Any]], ctx: _Context) -> list[Message]:
    if isinstance(content, str):
        return [{"role": "user", "content": content}] if content else []
    tool_messages: list[Message] = []
    carried: list[Part] = []
    parts: list[Part] = []
    for block in content:
        if block.get("type") == "tool_result":
            message, attachments = _tool_result(block, ctx)
            tool_messages.append(message)
            carried.extend(attachments)
        else:
            parts.extend(_user_parts(block))
    # Tool messages must directly follow the assistant's tool_calls, so they go first.
    user = _user_message(carried + parts)
    return [*tool_messages, user] if user else tool_messages


def _user_message(parts: list[Part]) -> Message | None:
    if not parts:
        return None
    if all(part["type"] == "text" for part in parts):
        # Plain strings are what every OpenAI-compatible server accepts.
        return {"role": "user", "content": "\n\n".join(part["text"] for part in parts)}
    return {"role": "user", "content": parts}


def _user_parts(block: dict[str, Any]) -> list[Part]:
    kind = block.get("type")
    if kind == "text":
        return [_text_part(block["text"])] if block["text"] else []
    if kind == "image":
        return [_image_part(block["source"])]
    if kind == "document":
        return [_document_part(block)]
    return []  # thinking in a user turn, server-tool results, unknown types


def _text_part(text: str) -> Part:
    return {"type": "text", "text": text}


def _image_part(source: dict[str, Any]) -> Part:
    kind = source.get("type")
    if kind == "base64":
        url = f"data:{source['media_type']};base64,{source['data']}"
        return {"type": "image_url", "image_url": {"url": url}}
    if kind == "url":
        return {"type": "image_url", "image_url": {"url": source["url"]}}
    return _text_part(f"[image omitted: a {kind!s} image source cannot be sent to this provider]")


def _document_part(block: dict[str, Any]) -> Part:
    source, title = block["source"], block.get("title")
    text = _document_text(source)
    if text is None:
        return _text_part(_document_placeholder(source, title))
    return _text_part(f"{title}\n\n{text}" if title else text)


def _document_text(source: dict[str, Any]) -> str | None:
    kind = source.get("type")
    if kind == "text":
        return str(source.get("data", ""))
    if kind == "content":
        content = source.get("content")
        return _joined_text(content) if isinstance(content, str | list) else ""
    return None


def _document_placeholder(source: dict[str, Any], title: str | None) -> str:
    what = f"document {title!r}" if title else "document"
    media = source.get("media_type", "")
    if source.get("type") == "url":
        what += f" at {source.get('url')}"
    elif media:
        what += f" ({media})"
    return f"[{what} omitted: this provider cannot read documents of this kind]"


def _tool_result(block: dict[str, Any], ctx: _Context) -> tuple[Message, list[Part]]:
    """One ``tool`` message, and the non-text parts that must follow it in a user message."""
    call_id = upstream_tool_id(block["tool_use_id"], ctx.dialect.tool_call_id_format)
    parts = _tool_result_parts(block.get("content"))
    texts = [part["text"] for part in parts if part["type"] == "text"]
    attachments = [part for part in parts if part["type"] != "text"]
    text = "\n\n".join(texts)
    if block.get("is_error"):
        text = f"Error: {text}" if text else "Error"
    if not text:
        text = "(see the attachments in the next message)" if attachments else "(no output)"
    message = {"role": "tool", "tool_call_id": call_id, "content": text}
    if attachments:
        attachments.insert(0, _text_part(f"[attachments returned by tool call {call_id}]"))
    return message, attachments


def _tool_result_parts(content: str | list[dict[str, Any]] | None) -> list[Part]:
    if isinstance(content, str):
        return [_text_part(content)] if content else []
    return [part for block in content or () for part in _user_parts(block)]


def _assistant_turn(content: str | list[dict[str, Any]], ctx: _Context) -> list[Message]:
    if isinstance(content, str):
        return [{"role": "assistant", "content": content}] if content else []
    texts = [b["text"] for b in content if b.get("type") == "text" and b["text"]]
    calls = [_tool_call(b, ctx) for b in content if b.get("type") == "tool_use"]
    reasoning = "\n\n".join(
        b["thinking"] for b in content if b.get("type") == "thinking" and b.get("thinking")
    )
    send_reasoning = ctx.dialect.send_reasoning_as != "none" and reasoning
    if not (texts or calls or send_reasoning):
        return []
    # null, not "", beside tool_calls: an empty text part is what strict servers reject.
    message: Message = {"role": "assistant", "content": "\n\n".join(texts) or None}
    if calls:
        message["tool_calls"] = calls
    if send_reasoning:
        message[ctx.dialect.send_reasoning_as] = reasoning
        if message["content"] is None and not calls:
            message["content"] = ""
    return [message]


def _tool_call(block: dict[str, Any], ctx: _Context) -> dict[str, Any]:
    return {
        "id": upstream_tool_id(block["id"], ctx.dialect.tool_call_id_format),
        "type": "function",
        "function": {
            "name": ctx.names.upstream(block["name"]),
            "arguments": orjson.dumps(block["input"]).decode(),
        },
    }


# --- system turns for servers that allow only one leading system message -----------------------


def _fold_system_messages(messages: list[Message]) -> list[Message]:
    """One leading system message; later ones join the neighbouring user message."""
    leading = 0
    while leading < len(messages) and messages[leading]["role"] == "system":
        leading += 1
    head = [m["content"] for m in messages[:leading]]
    out: list[Message] = [{"role": "system", "content": "\n\n".join(head)}] if head else []
    held: list[str] = []
    for message in messages[leading:]:
        if message["role"] == "system":
            _fold_one(out, held, message["content"])
        elif message["role"] == "user":
            out.append(_with_text(message, held, before=True) if held else message)
            held = []
        else:
            if held and message["role"] == "assistant":
                out.append({"role": "user", "content": "\n\n".join(held)})
                held = []
            out.append(message)
    if held:
        out.append({"role": "user", "content": "\n\n".join(held)})
    return out


def _fold_one(out: list[Message], held: list[str], text: str) -> None:
    wrapped = f"<system>\n{text}\n</system>"  # so the model still reads it as an instruction
    if out and out[-1]["role"] == "user":
        out[-1] = _with_text(out[-1], [wrapped], before=False)
    else:
        held.append(wrapped)  # tool messages may not be split, so wait for the next user turn


def _with_text(message: Message, texts: list[str], *, before: bool) -> Message:
    content = message["content"]
    if isinstance(content, str):
        joined = [*texts, content] if before else [content, *texts]
        return {**message, "content": "\n\n".join(joined)}
    parts = [_text_part(text) for text in texts]
    return {**message, "content": [*parts, *content] if before else [*content, *parts]}


# --- everything but the messages ----------------------------------------------------------------


def _sampling(
    body: dict[str, Any], dialect: OpenAIDialect, max_output: int | None
) -> dict[str, Any]:
    max_tokens = body["max_tokens"]
    if max_output is not None and max_output > 0:
        max_tokens = min(max_tokens, max_output)
    out: dict[str, Any] = {dialect.max_tokens_field: max_tokens}
    for key in ("temperature", "top_p"):
        if body.get(key) is not None:
            out[key] = body[key]
    if dialect.supports_top_k and body.get("top_k") is not None:
        out["top_k"] = body["top_k"]
    if body.get("stop_sequences"):
        out["stop"] = list(body["stop_sequences"])
    user_id = (body.get("metadata") or {}).get("user_id")
    if user_id and dialect.supports_user:
        out["user"] = user_id
    return out


def _custom_tools(body: dict[str, Any]) -> list[dict[str, Any]]:
    """The tools an upstream can call: server tools (web_search_..., bash_...) have no schema."""
    return [tool for tool in body.get("tools") or () if tool.get("type") in (None, "custom")]


def _tool_fields(
    tools: list[dict[str, Any]], choice: dict[str, Any] | None, ctx: _Context
) -> dict[str, Any]:
    if not tools:
        return {}  # tool_choice without tools is an error on every server
    out: dict[str, Any] = {"tools": [_function_tool(tool, ctx.names) for tool in tools]}
    if choice is None:
        return out
    if ctx.dialect.supports_tool_choice:
        out["tool_choice"] = _tool_choice(choice, ctx.names)
    if choice.get("disable_parallel_tool_use") and ctx.dialect.supports_parallel_tool_calls:
        out["parallel_tool_calls"] = False
    return out


def _function_tool(tool: dict[str, Any], names: ToolNames) -> dict[str, Any]:
    name = tool["name"]
    # Requests carry dozens of tools whose names almost always fit: skip the call for those.
    function: dict[str, Any] = {
        "name": name if len(name) <= names.max_length else names.upstream(name)
    }
    description = tool.get("description")
    if description:
        function["description"] = description
    function["parameters"] = tool["input_schema"]
    return {"type": "function", "function": function}


def _tool_choice(choice: dict[str, Any], names: ToolNames) -> str | dict[str, Any]:
    kind = choice["type"]
    if kind == "tool" and choice.get("name"):
        return {"type": "function", "function": {"name": names.upstream(choice["name"])}}
    return {"auto": "auto", "any": "required", "tool": "required", "none": "none"}[kind]


def _stream_fields(body: dict[str, Any], dialect: OpenAIDialect) -> dict[str, Any]:
    if not body.get("stream"):
        return {}
    if not dialect.supports_stream_options:
        return {"stream": True}
    return {"stream": True, "stream_options": {"include_usage": True}}
