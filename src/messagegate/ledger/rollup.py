"""A batch of ledger rows summed per daily rollup (UTC day, key, model, provider): one upsert
per group a batch holds instead of one per row."""

from __future__ import annotations

import time
from collections.abc import Sequence
from itertools import groupby, repeat
from operator import floordiv
from typing import Any

from messagegate.ledger.row import HEAD, SUMMED_COLUMNS, RowHead

DAY_SECONDS = 86_400
_TIME, _KEY, _MODEL, _PROVIDER = (HEAD.index(c) for c in ("time", "key", "model", "provider"))
_SUMMED = slice(HEAD.index(SUMMED_COLUMNS[0]), HEAD.index(SUMMED_COLUMNS[-1]) + 1)

# A rollup: day, key, model, provider, requests, then the SUMMED_COLUMNS' sums.
Rollup = list[str | int]
# A rollup's group: the day's number since the epoch, key, model, provider.
Group = tuple[float, str, str, str]


def rollups(heads: Sequence[RowHead]) -> list[Rollup]:
    """The batch's rollups, iterated in C (zip, count, min, sum, sorted): a Python loop per row
    would cost about as much as inserting the row."""
    if not heads:
        return []
    columns = list(zip(*heads, strict=True))
    times, keys, models, providers = (columns[i] for i in (_TIME, _KEY, _MODEL, _PROVIDER))
    day = min(times) // DAY_SECONDS
    # Counted, not put in sets: equal strings compare by memcmp, where a set hashes each new one.
    one = all(names.count(names[0]) == len(names) for names in (keys, models, providers))
    if one and day == max(times) // DAY_SECONDS:  # the usual batch: one group
        return [_rollup((day, keys[0], models[0], providers[0]), columns)]
    days = map(floordiv, times, repeat(DAY_SECONDS))
    groups: list[Group] = list(zip(days, keys, models, providers, strict=True))
    # Row numbers in group order, then each group's rows transposed and summed.
    order = sorted(range(len(heads)), key=groups.__getitem__)
    return [
        _rollup(group, list(zip(*map(heads.__getitem__, members), strict=True)))
        for group, members in groupby(order, groups.__getitem__)
    ]


def _rollup(group: Group, columns: list[tuple[Any, ...]]) -> Rollup:
    day, key, model, provider = group
    return [_day(day), key, model, provider, len(columns[0]), *map(sum, columns[_SUMMED])]


def _day(day: float) -> str:
    """The UTC date, as SQLite's date(time, 'unixepoch') writes it."""
    return time.strftime("%Y-%m-%d", time.gmtime(day * DAY_SECONDS))
