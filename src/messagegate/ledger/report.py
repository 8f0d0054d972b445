"""Usage reports from the ledger's daily rollups, for the `usage` command and the admin API."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from messagegate.config.keyspec import parse_duration


def since_day(since: str, now: float) -> str:
    """The first UTC day a `since` such as 7d or 24h covers."""
    return datetime.fromtimestamp(now - parse_duration(since), UTC).date().isoformat()


def with_usd(row: dict[str, Any]) -> dict[str, Any]:
    return row | {"cost_usd": row["cost_micro_usd"] / 1_000_000}
