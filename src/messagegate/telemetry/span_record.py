"""What tracing records: a request's record as the request path fills it, and the spans it
stands for.

A request's record is one list, made when the request arrives, filled in place and queued once
when it ends (a list: CPython builds it from locals in one instruction; a class's ``__init__``
costs more than the rest of a span). By index:

    IDS       64 hex digits: the trace id (32), the request's span id (16), its first attempt's (16)
    PARENT    the client's span id (16 hex digits), or ""
    STATE     the client's tracestate, or ""
    SAMPLED   whether its spans are recorded (a sampled-out request only sends its context on)
    START, END                Unix nanoseconds
    SERVER    the request span's key (below)
    ANSWER    None, or `answer_values`' tuple (the same object in the attempt that got it)
    ATTEMPTS  None, or the attempts' records: (span id in hex, or None for the last 16 digits of
              IDS; start; end; key; answer; content)
    OUTPUT    None, or the answer's text (``capture_content``)
    ATTEMPT_SPAN, ATTEMPT_START   the attempt under way: its span id (as in ATTEMPTS) and start
    ROUTE_SPANS   None, or the `RouteSpans` of the last attempt's route (its request's, mostly)
    TRACE_HEX     the trace id's 32 hex digits (IDS' first), for each attempt's ``traceparent``

A key holds what takes few values across requests, so that an encoder encodes each distinct key
once; `stable` turns it into the span's kind, name, attribute group and `STABLE_ATTRIBUTES`'
values:

    a routed request:   (RouteSpans, model asked, status, attempts, fallback model, error, reason)
    any other request:  (AttributeGroup of its method and path, model or None, status, error)
    an attempt:         (RouteSpans, number, max_tokens, temperature, top_p, top_k, error, reason)

What differs from request to request (token counts, the answer's id) is the ANSWER's, encoded
each time. `spans` lays a record out as `SpanRecord`s, one per span, for the JSON encoder and the
tests.
"""

from __future__ import annotations

from typing import Any

from messagegate.telemetry.metrics import MESSAGES_PATH, OPERATION

SERVER_KIND = 2
CLIENT_KIND = 3

# A request's record, by index.
IDS, PARENT, STATE, SAMPLED, START, END, SERVER, ANSWER, ATTEMPTS, OUTPUT = range(10)
ATTEMPT_SPAN, ATTEMPT_START, ROUTE_SPANS, TRACE_HEX = 10, 11, 12, 13
RequestRecord = list[Any]
# An attempt's record (in ATTEMPTS), by index.
A_SPAN, A_START, A_END, A_KEY, A_ANSWER, A_CONTENT = range(6)

# A span laid out (`spans`), by index.
TRACE_ID, SPAN_ID, PARENT_ID, TRACE_STATE, SPAN_START, SPAN_END, STABLE, SPAN_ANSWER, CONTENT = (
    range(9)
)
# In ANSWER: `answer_values`' order.
ANSWER_INPUT, ANSWER_OUTPUT, ANSWER_READ, ANSWER_CREATED, ANSWER_ID, ANSWER_REASON = range(6)

AttributeValue = str | int | float | bool | tuple[str, ...]
SpanRecord = tuple[Any, ...]

# After (kind, name, group) in a span's STABLE tuple.
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
    (ANSWER_READ, "gen_ai.usage.cache_read.input_tokens"),
    (ANSWER_CREATED, "gen_ai.usage.cache_creation.input_tokens"),
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


# A routed request's method and path.
ROUTED = AttributeGroup((("http.request.method", "POST"), ("url.path", MESSAGES_PATH)))


class RouteSpans:
    """What a route's spans share: its attempts' attributes and name, and what its requests'
    spans say of it. Hashed by identity: a key holding it hashes in one step."""

    __slots__ = ("group", "label", "model", "name", "provider", "route")

    def __init__(
        self, route: object, provider: str, label: str, model: str, group: AttributeGroup
    ) -> None:
        # Held: tracers remember routes by their id, which this keeps from being reused.
        self.route = route
        self.provider = provider
        self.label = label
        self.model = model
        self.group = group
        self.name = f"{OPERATION} {model}"


def stable(key: tuple[Any, ...]) -> tuple[Any, ...]:
    """A key's (kind, name, group, *values of STABLE_ATTRIBUTES), None for what the span has
    not."""
    first = key[0]
    if len(key) == 8:  # an attempt
        _, number, max_tokens, temperature, top_p, top_k, error, reason = key
        return (
            CLIENT_KIND, first.name, first.group, None, None, None, None, number,
            max_tokens, temperature, top_p, top_k, None,
            None if error is not None else first.model, None, error,
            None if reason is None else (reason,),
        )  # fmt: skip
    if len(key) == 7:  # a routed request
        _, model, status, attempts, fallback, error, reason = key
        return (
            SERVER_KIND, f"{OPERATION} {model}", ROUTED, status, OPERATION, first.provider,
            first.label, attempts, None, None, None, None, model, first.model, fallback, error,
            None if reason is None else (reason,),
        )  # fmt: skip
    _, model, status, error = key
    if model is None:
        method, path = (value for _, value in first.pairs)
        name, operation = f"{method} {path}", None
    else:
        name, operation = f"{OPERATION} {model}", OPERATION
    return (
        SERVER_KIND, name, first, status, operation, None, None, None,
        None, None, None, None, model, None, None, error, None,
    )  # fmt: skip


def stable_attributes(values: tuple[Any, ...]) -> list[tuple[str, AttributeValue]]:
    """The attributes of a span's STABLE tuple. The request parameters in it are the client's
    JSON values, left to this (called once per distinct key) to type: a double, an int, or
    left out (a value of another type, in a body no schema held to them)."""
    out = list(values[2].pairs)
    for key, value in zip(STABLE_ATTRIBUTES, values[3:], strict=True):
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


def answer_attributes(answer: tuple[Any, ...] | None) -> list[tuple[str, AttributeValue]]:
    if answer is None:
        return []
    return [(name, answer[i]) for i, name in ANSWER_ATTRIBUTES if answer[i] is not None]


def attributes(span: SpanRecord) -> list[tuple[str, AttributeValue]]:
    """Every attribute of a span, in the order the encoders write them."""
    out = stable_attributes(span[STABLE])
    out.extend(answer_attributes(span[SPAN_ANSWER]))
    content = span[CONTENT]
    if content is not None:
        out.extend(
            (k, v) for k, v in zip(CONTENT_ATTRIBUTES, content, strict=True) if v is not None
        )
    return out


def spans(record: RequestRecord) -> list[SpanRecord]:
    """A request's spans: its own, then its attempts'."""
    ids = bytes.fromhex(record[IDS])
    trace, span = ids[:16], ids[16:24]
    parent = bytes.fromhex(record[PARENT])
    state = record[STATE]
    output = record[OUTPUT]
    content = None if output is None else (None, None, output)
    out = [
        (
            trace, span, parent, state, record[START], record[END],
            stable(record[SERVER]), record[ANSWER], content,
        )
    ]  # fmt: skip
    for span_hex, start, end, key, answer, attempt_content in record[ATTEMPTS] or ():
        attempt = ids[24:] if span_hex is None else bytes.fromhex(span_hex)
        out.append((trace, attempt, span, state, start, end, stable(key), answer, attempt_content))
    return out


def answer_values(value: Any, body: object) -> tuple[Any, ...]:
    """(input, output, cache read, cache creation tokens, answer id, stop reason) of an
    answer: its usage, and its `body`'s id and stop reason when it came whole (a dict)."""
    usage = getattr(value, "usage", None)
    if usage is None:
        read = created = total_input = output = None
    else:
        read = usage.cache_read_input_tokens
        created = usage.cache_creation_input_tokens
        total_input = usage.input_tokens + read + created
        output = usage.output_tokens
    answer_id = reason = None
    if type(body) is dict:
        answer_id = body.get("id")
        if type(answer_id) is not str:
            answer_id = None
        reason = body.get("stop_reason")
        if type(reason) is not str:
            reason = None
    return total_input, output, read, created, answer_id, reason
