"""One ledger row: who asked for what, what answered, what it used and cost."""

from __future__ import annotations

import enum
from collections.abc import Sequence
from typing import Any, NamedTuple

import orjson


class Outcome(enum.Enum):
    COMPLETE = "complete"
    CLIENT_ABORTED = "client_aborted"
    UPSTREAM_FAILED = "upstream_failed"


class LedgerRow(NamedTuple):
    """A tuple: built and written out (as a JSON array) faster than any record class."""

    request_id: str
    time: float
    key: str
    model_asked: str
    model: str
    route: str
    provider: str
    stream: bool
    status: int
    latency_ms: float
    ttft_ms: float | None
    input_tokens: int
    output_tokens: int
    cache_read_tokens: int
    cache_write_5m_tokens: int
    cache_write_1h_tokens: int
    cost_micro_usd: int
    # The price used: JSON of USD per million tokens by kind (input, output, cache_read, ...).
    price: str | None
    outcome: str

    def encode(self) -> bytes:
        """One journal line: the values in COLUMNS order, as a JSON array."""
        return orjson.dumps(tuple(self), option=orjson.OPT_APPEND_NEWLINE)


# A row as the database takes it: its values in COLUMNS order.
Values = Sequence[Any]
COLUMNS = LedgerRow._fields
# The columns the daily rollups sum (besides counting requests).
SUMMED_COLUMNS = (
    "input_tokens",
    "output_tokens",
    "cache_read_tokens",
    "cache_write_5m_tokens",
    "cache_write_1h_tokens",
    "cost_micro_usd",
)


def decode_batch(array: bytes) -> list[Values]:
    """Journal lines joined into one JSON array: each line's values."""
    rows: list[Values] = orjson.loads(array)
    for values in rows:
        if len(values) != len(COLUMNS):
            raise ValueError(f"a journal line of {len(values)} values, not {len(COLUMNS)}")
    return rows
