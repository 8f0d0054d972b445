"""Request records as an OTLP ``ExportTraceServiceRequest`` in protobuf, encoded by hand.

The message classes of ``opentelemetry-proto`` cost ~25x more per span (measured, see
CHANGELOG); the wire format is small and stable, and tests decode these bytes with those
classes. Whatever repeats (a route's attributes, a model's name, small numbers) is encoded
once and kept, up to a bound, so a span costs little more than its ids, times and joins.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from typing import Any

from messagegate.telemetry.span_record import (
    CONTENT_ATTRIBUTES,
    ERROR_TYPE,
    AttributeValue,
    RequestRecord,
    stable,
    stable_attributes,
)

SCOPE_NAME = "messagegate"
_CACHE_MAX = 4096
_INT64_MASK = (1 << 64) - 1
_SMALL = [bytes((n,)) for n in range(0x80)]
_CONTINUED = [bytes((n | 0x80,)) for n in range(0x80)]
# A span's tag and its length's first byte, for a length of two bytes, by its low 7 bits.
_LONG_SPAN_TAGS = [b"\x12" + first for first in _CONTINUED]
# trace_id (1), span_id (2), [parent_span_id (4)], start_time_unix_nano (7), end_time_unix_nano (8)
_WITH_PARENT = struct.Struct("<2s16s2s8s2s8sBQBQ")
_WITHOUT_PARENT = struct.Struct("<2s16s2s8sBQBQ")
_DOUBLE = struct.Struct("<d")
_ERROR_STATUS = b"\x7a\x02\x18\x02"  # status (15) { code (3): STATUS_CODE_ERROR }


def varint(n: int) -> bytes:
    if n < 0x80:
        return _SMALL[n]
    # Token counts: two or three bytes, without the loop.
    if n < 0x4000:
        return bytes(((n & 0x7F) | 0x80, n >> 7))
    if n < 0x200000:
        return bytes(((n & 0x7F) | 0x80, ((n >> 7) & 0x7F) | 0x80, n >> 14))
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def field(tag: int, payload: bytes) -> bytes:
    """A length-delimited field: its tag byte (field numbers below 16), length, payload."""
    return bytes((tag,)) + varint(len(payload)) + payload


def any_value(value: AttributeValue) -> bytes:
    """An ``AnyValue`` message."""
    if isinstance(value, str):
        return field(0x0A, value.encode())
    if isinstance(value, bool):
        return b"\x10\x01" if value else b"\x10\x00"
    if isinstance(value, int):
        return b"\x18" + varint(value & _INT64_MASK)
    if isinstance(value, float):
        return b"\x21" + _DOUBLE.pack(value)
    values = b"".join(field(0x0A, any_value(item)) for item in value)
    return field(0x2A, values)


def _attribute(key: str, value: AttributeValue) -> bytes:
    return field(0x4A, field(0x0A, key.encode()) + field(0x12, any_value(value)))


def _int_prefixes(key: str) -> list[bytes]:
    """The bytes before an int attribute's varint, by the varint's length (1 to 10)."""
    name = field(0x0A, key.encode())
    out = [b""]
    for size in range(1, 11):
        value = b"\x12" + bytes((size + 1,)) + b"\x18"
        out.append(b"\x4a" + varint(len(name) + len(value) + size) + name + value)
    return out


def _count_starts(prefixes: list[bytes]) -> list[bytes]:
    """An int attribute's bytes up to its varint's first byte, by that byte's low 7 bits: for
    a varint of one byte (0 to 0x7F, the whole attribute), two (0x80 to 0xFF), three (0x100 to
    0x17F). A count is then a lookup and a join or two, not a call (under 40 KB a name)."""
    whole = [prefixes[1] + _SMALL[low] for low in range(0x80)]
    two = [prefixes[2] + _CONTINUED[low] for low in range(0x80)]
    return whole + two + [prefixes[3] + _CONTINUED[low] for low in range(0x80)]


def _string_prefixes(key: str) -> list[bytes]:
    """The bytes before a short string attribute's UTF-8, by its length (below 96)."""
    name = field(0x0A, key.encode())
    out = []
    for size in range(0x60):
        value = b"\x12" + bytes((size + 2,)) + b"\x0a" + bytes((size,))
        out.append(b"\x4a" + bytes((len(name) + len(value) + size,)) + name + value)
    return out


def _content(content: tuple[str | None, ...]) -> bytes:
    """Prompt and answer text (``capture_content``): rare, and long."""
    pairs = zip(CONTENT_ATTRIBUTES, content, strict=True)
    return b"".join(_attribute(key, text) for key, text in pairs if text is not None)


def key_values(pairs: Sequence[tuple[str, AttributeValue]], tag: int) -> bytes:
    return b"".join(
        field(tag, field(0x0A, k.encode()) + field(0x12, any_value(v))) for k, v in pairs
    )


_INPUT_TOKENS = _int_prefixes("gen_ai.usage.input_tokens")
_OUTPUT_TOKENS = _int_prefixes("gen_ai.usage.output_tokens")
_READ_TOKENS = _int_prefixes("gen_ai.usage.cache_read.input_tokens")
_CREATED_TOKENS = _int_prefixes("gen_ai.usage.cache_creation.input_tokens")
_INPUT_STARTS = _count_starts(_INPUT_TOKENS)
_OUTPUT_STARTS = _count_starts(_OUTPUT_TOKENS)
_READ_STARTS = _count_starts(_READ_TOKENS)
_CREATED_STARTS = _count_starts(_CREATED_TOKENS)
_RESPONSE_ID = _string_prefixes("gen_ai.response.id")


def _long_count(prefixes: list[bytes], n: int) -> bytes:
    """An int attribute of `n`, 2**21 or more (its varint four bytes or more)."""
    encoded = varint(n)
    return prefixes[len(encoded)] + encoded


def _answer(answer: tuple[Any, ...]) -> bytes:
    """An answer's token counts and id (span_record.ANSWER_ATTRIBUTES). Unrolled, without a
    call for a count below 2**21 nor a list: a loop, or a call a count, cost ~1,000
    instructions a request."""
    n = answer[0]
    input_tokens = (
        b"" if n is None
        else _INPUT_STARTS[n] if n < 0x80
        else _INPUT_STARTS[0x80 | n & 0x7F] + _SMALL[n >> 7] if n < 0x4000
        else _INPUT_STARTS[0x100 | n & 0x7F] + _CONTINUED[n >> 7 & 0x7F] + _SMALL[n >> 14]
        if n < 0x200000
        else _long_count(_INPUT_TOKENS, n)
    )  # fmt: skip
    n = answer[1]
    output_tokens = (
        b"" if n is None
        else _OUTPUT_STARTS[n] if n < 0x80
        else _OUTPUT_STARTS[0x80 | n & 0x7F] + _SMALL[n >> 7] if n < 0x4000
        else _OUTPUT_STARTS[0x100 | n & 0x7F] + _CONTINUED[n >> 7 & 0x7F] + _SMALL[n >> 14]
        if n < 0x200000
        else _long_count(_OUTPUT_TOKENS, n)
    )  # fmt: skip
    n = answer[2]
    read_tokens = (
        b"" if n is None
        else _READ_STARTS[n] if n < 0x80
        else _READ_STARTS[0x80 | n & 0x7F] + _SMALL[n >> 7] if n < 0x4000
        else _READ_STARTS[0x100 | n & 0x7F] + _CONTINUED[n >> 7 & 0x7F] + _SMALL[n >> 14]
        if n < 0x200000
        else _long_count(_READ_TOKENS, n)
    )  # fmt: skip
    n = answer[3]
    created_tokens = (
        b"" if n is None
        else _CREATED_STARTS[n] if n < 0x80
        else _CREATED_STARTS[0x80 | n & 0x7F] + _SMALL[n >> 7] if n < 0x4000
        else _CREATED_STARTS[0x100 | n & 0x7F] + _CONTINUED[n >> 7 & 0x7F] + _SMALL[n >> 14]
        if n < 0x200000
        else _long_count(_CREATED_TOKENS, n)
    )  # fmt: skip
    answer_id = answer[4]
    if answer_id is None:
        response_id = b""
    else:
        raw = answer_id.encode()
        if len(raw) < 0x60:
            response_id = _RESPONSE_ID[len(raw)] + raw
        else:
            response_id = _attribute("gen_ai.response.id", answer_id)
    return b"".join((input_tokens, output_tokens, read_tokens, created_tokens, response_id))


def _framed(
    spans: list[bytes],
    head: bytes,
    fragment: bytes,
    state: str,
    tail: bytes,
    content: tuple[str | None, ...] | None,
) -> int:
    """Add a span's tag and length, and its bytes, to `spans`; their length. For a span with a
    tracestate or captured content, or a length of one byte or three (all rare)."""
    parts = [head, fragment]
    if state:
        parts.append(field(0x1A, state.encode()))
    parts.append(tail)
    if content is not None:
        parts.append(_content(content))
    body = b"".join(parts)
    framing = b"\x12" + varint(len(body))
    spans += (framing, body)
    return len(framing) + len(body)


class ProtobufEncoder:
    """Batches of request records as the request body of ``POST /v1/traces``."""

    content_type = "application/x-protobuf"

    def __init__(self, resource: Sequence[tuple[str, str]], version: str) -> None:
        # The encoding of a span's name, kind, stable attributes and status, by its key.
        self._fragments: dict[tuple[object, ...], bytes] = {}
        self._scope = field(0x0A, field(0x0A, SCOPE_NAME.encode()) + field(0x12, version.encode()))
        self._resource = field(0x0A, key_values(resource, 0x0A))

    def encode(self, records: Sequence[RequestRecord]) -> bytes:
        # One loop, and no Python call per span on the usual path: on CPython a call costs
        # about what the rest of the span does.
        fromhex, with_parent = bytes.fromhex, _WITH_PARENT.pack
        fragments, small, long_tags = self._fragments, _SMALL, _LONG_SPAN_TAGS
        # Each span's tag and length, then its bytes: joined once, with the whole batch; and
        # their length (a sum as they come costs less than one over the list).
        spans: list[bytes] = []
        spans_size = 0
        for record in records:
            ids, parent, state, _, start, end, key, answer, attempts, output = record[:10]
            # "16s" takes the first 16 of the 32 bytes: the trace id.
            raw = fromhex(ids)
            span = raw[16:24]
            if parent:
                head = with_parent(
                    b"\x0a\x10", raw, b"\x12\x08", span, b"\x22\x08", fromhex(parent),
                    0x39, start, 0x41, end,
                )  # fmt: skip
            else:
                head = _WITHOUT_PARENT.pack(
                    b"\x0a\x10", raw, b"\x12\x08", span, 0x39, start, 0x41, end
                )
            # A whole answer's attempt span and its request's share its tuple: its attributes
            # are encoded once for both.
            tail = b"" if answer is None else _answer(answer)
            try:
                fragment = fragments[key]
            except KeyError:
                fragment = self._fragment(key)
            except TypeError:  # a client's parameter of a type no schema checked (a list, say)
                fragment = _stable_fragment(stable(key))
            size = len(head) + len(fragment) + len(tail)
            if 0x80 <= size < 0x4000 and not state and output is None:
                spans += (long_tags[size & 0x7F], small[size >> 7], head, fragment, tail)
                spans_size += size + 3
            else:
                content = None if output is None else (None, None, output)
                spans_size += _framed(spans, head, fragment, state, tail, content)
            for span_hex, start, end, key, attempt_answer, content in attempts or ():
                head = with_parent(
                    b"\x0a\x10", raw, b"\x12\x08",
                    raw[24:] if span_hex is None else fromhex(span_hex),
                    b"\x22\x08", span, 0x39, start, 0x41, end,
                )  # fmt: skip
                own = tail
                if attempt_answer is not answer:
                    own = b"" if attempt_answer is None else _answer(attempt_answer)
                try:
                    fragment = fragments[key]
                except KeyError:
                    fragment = self._fragment(key)
                except TypeError:
                    fragment = _stable_fragment(stable(key))
                size = len(head) + len(fragment) + len(own)
                if 0x80 <= size < 0x4000 and not state and content is None:
                    spans += (long_tags[size & 0x7F], small[size >> 7], head, fragment, own)
                    spans_size += size + 3
                else:
                    spans_size += _framed(spans, head, fragment, state, own, content)
        scope = self._scope
        scope_size = len(scope) + spans_size
        scope_head = b"\x12" + varint(scope_size)
        resource = self._resource
        size = len(resource) + len(scope_head) + scope_size
        return b"".join((b"\x0a", varint(size), resource, scope_head, scope, *spans))

    def _fragment(self, key: tuple[Any, ...]) -> bytes:
        encoded = _stable_fragment(stable(key))
        if len(self._fragments) >= _CACHE_MAX:
            self._fragments.clear()
        self._fragments[key] = encoded
        return encoded


def _stable_fragment(stable: tuple[Any, ...]) -> bytes:
    """A span's name, kind, stable attributes and status."""
    kind, name = stable[:2]
    encoded: bytes = field(0x2A, name.encode()) + b"\x30" + _SMALL[kind]
    encoded += key_values(stable_attributes(stable), 0x4A)
    if stable[ERROR_TYPE] is not None:
        encoded += _ERROR_STATUS
    return encoded
