"""A batch of ledger rows summed per daily rollup (UTC day, key, model, provider): one upsert
per group a batch holds instead of one per row."""

from __future__ import annotations

import time
from collections.abc import Iterable

from messagegate.ledger.row import COLUMNS, SUMMED_COLUMNS, Values

_TIME, _KEY, _MODEL, _PROVIDER = (COLUMNS.index(c) for c in ("time", "key", "model", "provider"))
_SUMMED = tuple(COLUMNS.index(c) for c in SUMMED_COLUMNS)
DAY_SECONDS = 86_400

# A rollup: day, key, model, provider, requests, then the _SUMMED columns' sums.
Rollup = list[str | int]


def rollups(rows: Iterable[Values]) -> list[Rollup]:
    groups: dict[tuple[int, str, str, str], list[int]] = {}
    for row in rows:
        group = (int(row[_TIME] // DAY_SECONDS), row[_KEY], row[_MODEL], row[_PROVIDER])
        sums = groups.get(group)
        if sums is None:
            groups[group] = [1, *(row[i] for i in _SUMMED)]
        else:
            sums[0] += 1
            for at, i in enumerate(_SUMMED, 1):
                sums[at] += row[i]
    return [
        [_day(day), key, model, provider, *sums]
        for (day, key, model, provider), sums in groups.items()
    ]


def _day(day: int) -> str:
    """The UTC date, as SQLite's date(time, 'unixepoch') writes it."""
    return time.strftime("%Y-%m-%d", time.gmtime(day * DAY_SECONDS))
