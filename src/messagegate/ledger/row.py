"""One ledger row: who asked for what, what answered, what it used and cost."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any

import orjson


class Outcome(enum.Enum):
    COMPLETE = "complete"
    CLIENT_ABORTED = "client_aborted"
    UPSTREAM_FAILED = "upstream_failed"


@dataclass(frozen=True, slots=True)
class LedgerRow:
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
        """One journal line."""
        return orjson.dumps(self) + b"\n"


# A row as the database takes it: its values in COLUMNS order.
Values = tuple[Any, ...]
COLUMNS = tuple(LedgerRow.__dataclass_fields__)


def decode(line: bytes) -> Values:
    data: dict[str, Any] = orjson.loads(line)
    return tuple(data[name] for name in COLUMNS)
