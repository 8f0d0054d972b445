"""One ledger row: who asked for what, what answered, what it used and cost; and a batch of them as
the journal holds them."""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import msgspec
import orjson


class Outcome(enum.Enum):
    COMPLETE = "complete"
    CLIENT_ABORTED = "client_aborted"
    UPSTREAM_FAILED = "upstream_failed"


# A row is a plain tuple (a named tuple's Python-level constructor costs more than the rest of the
# row, ~6,000 instructions), journalled as a JSON array a line: first what the shipper reads (the
# HEAD: the row's key and its rollup), then the TAIL as one nested array, which it skips unread.
HEAD = (
    "request_id",
    "time",
    "key",
    "model",
    "provider",
    "input_tokens",
    "output_tokens",
    "cache_read_tokens",
    "cache_write_5m_tokens",
    "cache_write_1h_tokens",
    "cost_micro_usd",
)
TAIL = (
    "model_asked",
    "route",
    "stream",
    "status",
    "latency_ms",
    "ttft_ms",
    # The price used: USD per million tokens by kind (input, output, cache_read, ...), a JSON
    # object in the line (a string would be escaped by every write and read).
    "price",
    "outcome",
)
COLUMNS = HEAD + TAIL
Tail = tuple[
    str,  # model_asked
    str,  # route
    bool,  # stream
    int,  # status
    float,  # latency_ms
    float | None,  # ttft_ms
    orjson.Fragment | None,  # price: JSON written as is
    str,  # outcome
]
LedgerRow = tuple[
    str,  # request_id
    float,  # time
    str,  # key
    str,  # model
    str,  # provider
    int,  # input_tokens
    int,  # output_tokens
    int,  # cache_read_tokens
    int,  # cache_write_5m_tokens
    int,  # cache_write_1h_tokens
    int,  # cost_micro_usd
    Tail,
]
# A row as the shipper reads it back from a journal file: the HEAD's values, then its tail
# undecoded.
Head = tuple[str, float, str, str, str, int, int, int, int, int, int, msgspec.Raw]
# What the store reads of a row (its first len(HEAD) values): a Head, or the row itself when the
# journal kept it in memory.
RowHead = Head | LedgerRow
# The columns the daily rollups sum (besides counting requests).
SUMMED_COLUMNS = HEAD[5:]
_HEADS = msgspec.json.Decoder(list[Head])
_PRICE = TAIL.index("price")


@dataclass(frozen=True, slots=True)
class Batch:
    """Rows from a journal: each one's line as written (without its newline), which the SQLite
    ledger stores as is, and its head."""

    lines: list[bytes]
    heads: Sequence[RowHead]

    def columns(self) -> list[tuple[Any, ...]]:
        """Every value of every row, by column in COLUMNS order (a store that stores columns)."""
        rows: list[list[Any]] = orjson.loads(_array(self.lines))
        head = list(zip(*rows, strict=True))
        tail = list(zip(*head.pop(), strict=True))
        if len(head) != len(HEAD) or len(tail) != len(TAIL):
            raise ValueError(f"journal lines without their {len(COLUMNS)} values")
        tail[_PRICE] = tuple(None if p is None else orjson.dumps(p).decode() for p in tail[_PRICE])
        return head + tail


def batch_of(rows: Sequence[LedgerRow]) -> Batch:
    """A batch as the journal would give these rows back."""
    return decode_batch([orjson.dumps(row) for row in rows])


def decode_batch(lines: list[bytes]) -> Batch:
    """Journal lines' heads, parsed as one JSON array (one parse per batch, not per row)."""
    try:
        return Batch(lines, _HEADS.decode(_array(lines)))
    except msgspec.ValidationError:
        # Lines an earlier release journalled (and did not ship before it stopped) are laid out
        # anew, one at a time: rare, and they must not stay behind.
        lines = list(map(_relaid, lines))
        return Batch(lines, _HEADS.decode(_array(lines)))


def _relaid(line: bytes) -> bytes:
    """A line of releases before the head (a flat array of the columns in their table's order,
    the price a JSON string) in today's layout; any other line as it is."""
    values = orjson.loads(line)
    if not isinstance(values, list) or len(values) != len(COLUMNS):
        return line
    request_id, time, key, asked, model, route, provider, stream, status, *rest = values
    latency, ttft, *summed, price, outcome = rest
    tail = (asked, route, stream, status, latency, ttft, _object(price), outcome)
    return orjson.dumps((request_id, time, key, model, provider, *summed, tail))


def _object(price: str | None) -> orjson.Fragment | None:
    return None if price is None else orjson.Fragment(price)


def _array(lines: list[bytes]) -> bytes:
    return b"[" + b",".join(lines) + b"]"
