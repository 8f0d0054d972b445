"""A finished span as the request path leaves it: one flat tuple of values, encoded later.

A tuple because it is what CPython builds cheapest (one instruction from locals; a class's
``__init__`` costs more than the rest of a span). Its layout, by index:

    TRACE_ID (16 bytes), SPAN_ID (8), PARENT_ID (8, or b"" for none), TRACE_STATE (str),
    START, END (Unix nanoseconds), STABLE (below), ANSWER (None, or `answer_values`' tuple,
    the same object in an answer's attempt span and request span), CONTENT (None, or the input
    messages, system instructions and output messages)

STABLE holds what takes few values across requests, so that an encoder encodes it once per
distinct tuple: (kind, name, group, *values of `STABLE_ATTRIBUTES`), None for an attribute the
span does not have. `group` is an `AttributeGroup`, attributes many spans share.
"""

from __future__ import annotations

from typing import Any

SERVER_KIND = 2
CLIENT_KIND = 3

TRACE_ID, SPAN_ID, PARENT_ID, TRACE_STATE, START, END, STABLE, ANSWER, CONTENT = range(9)
# In ANSWER: `answer_values`' order.
ANSWER_INPUT, ANSWER_OUTPUT, ANSWER_READ, ANSWER_CREATED, ANSWER_ID, ANSWER_REASONS = range(6)

AttributeValue = str | int | float | bool | tuple[str, ...]
SpanRecord = tuple[Any, ...]

# After (kind, name, group) in a record's STABLE tuple.
STABLE_ATTRIBUTES = (
    "http.response.status_code",
    "gen_ai.operation.name",
    "gen_ai.provider.name",
    "messagegate.route",
    "messagegate.attempt",
    "gen_ai.request.max_tokens",
    "gen_ai.request.temperature",
    "gen_ai.request.top_p",
    "gen_ai.request.top_k",
    "gen_ai.usage.cache_read.input_tokens",
    "gen_ai.usage.cache_creation.input_tokens",
    "gen_ai.request.model",
    "gen_ai.response.model",
    "messagegate.fallback_model",
    "error.type",
    "gen_ai.response.finish_reasons",
)
_DOUBLES = frozenset({"gen_ai.request.temperature", "gen_ai.request.top_p"})
_INTS = frozenset({"gen_ai.request.max_tokens", "gen_ai.request.top_k"})
_NUMBERS = (int, float)
# Where error.type is in STABLE: a span that has one has the ERROR status.
ERROR_TYPE = 3 + STABLE_ATTRIBUTES.index("error.type")
ANSWER_ATTRIBUTES = (
    (ANSWER_INPUT, "gen_ai.usage.input_tokens"),
    (ANSWER_OUTPUT, "gen_ai.usage.output_tokens"),
    (ANSWER_ID, "gen_ai.response.id"),
)
CONTENT_ATTRIBUTES = (
    "gen_ai.input.messages",
    "gen_ai.system_instructions",
    "gen_ai.output.messages",
)


class AttributeGroup:
    """Attributes many spans share."""

    __slots__ = ("pairs",)

    def __init__(self, pairs: tuple[tuple[str, AttributeValue], ...]) -> None:
        self.pairs = pairs


def stable_attributes(stable: tuple[Any, ...]) -> list[tuple[str, AttributeValue]]:
    """The attributes of a record's STABLE tuple. The request parameters in it are the client's
    JSON values, left to this (called once per distinct tuple) to type: a double, an int, or
    left out (a value of another type, in a body no schema held to them)."""
    out = list(stable[2].pairs)
    for key, value in zip(STABLE_ATTRIBUTES, stable[3:], strict=True):
        if value is None:
            continue
        if key in _DOUBLES:
            if type(value) not in _NUMBERS:
                continue
            value = float(value)
        elif key in _INTS and type(value) is not int:
            continue
        out.append((key, value))
    return out


def attributes(record: SpanRecord) -> list[tuple[str, AttributeValue]]:
    """Every attribute of a span, in the order the encoders write them."""
    out = stable_attributes(record[STABLE])
    answer = record[ANSWER]
    if answer is not None:
        out.extend((name, answer[i]) for i, name in ANSWER_ATTRIBUTES if answer[i] is not None)
    content = record[CONTENT]
    if content is not None:
        out.extend(
            (k, v) for k, v in zip(CONTENT_ATTRIBUTES, content, strict=True) if v is not None
        )
    return out


def answer_values(value: Any) -> tuple[Any, ...]:
    """(input, output, cache read, cache creation tokens, answer id, finish reasons) of an
    answer: its usage, and its body's id and stop reason when it came whole."""
    usage = getattr(value, "usage", None)
    if usage is None:
        read = created = total_input = output = None
    else:
        read = usage.cache_read_input_tokens
        created = usage.cache_creation_input_tokens
        total_input = usage.input_tokens + read + created
        output = usage.output_tokens
    answer_id = reasons = None
    body = getattr(value, "body", None)
    if type(body) is dict:
        answer_id = body.get("id")
        if type(answer_id) is not str:
            answer_id = None
        reason = body.get("stop_reason")
        if type(reason) is str:
            reasons = (reason,)
    return total_input, output, read, created, answer_id, reasons
