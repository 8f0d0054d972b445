"""Spend per key as the ledger's daily rollups hold it, read when a scrape asks (at most every few
seconds, on the store's thread), so it survives restarts and counts every worker's rows once."""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Callable, Iterator
from typing import Protocol

from prometheus_client.metrics_core import CounterMetricFamily, Metric
from prometheus_client.registry import Collector

error_log = logging.getLogger("messagegate.error")

NAME = "messagegate_key_spend"
# Prometheus scrapes every few seconds; the rollups are read at most this often.
FRESH_SECONDS = 5.0


class Rollups(Protocol):
    """The ledger's totals (``store.base.LedgerStore``)."""

    async def spend_by_key(self) -> dict[str, int]: ...


class KeySpend(Collector):
    """``messagegate_key_spend_usd_total{key}``: each key's spend since the ledger began."""

    def __init__(
        self,
        rollups: Rollups,
        label: Callable[[str], str],
        clock: Callable[[], float],
        fresh: float = FRESH_SECONDS,
    ) -> None:
        self.rollups = rollups
        # A key name's label value (capped: the keys beyond the cap share one).
        self.label = label
        self.clock = clock
        self.fresh = fresh
        self._read_at = -math.inf
        self._spent: dict[str, int] = {}  # micro-USD by label value
        self._reading: asyncio.Future[None] | None = None

    async def refresh(self) -> None:
        """Read the rollups unless they were read in the last `fresh` seconds; scrapes that
        come while a read runs wait for that one."""
        if self.clock() - self._read_at < self.fresh:
            return
        if self._reading is None:
            self._reading = asyncio.ensure_future(self._read())
        # A scrape that is cancelled leaves the read to the others.
        await asyncio.shield(self._reading)

    async def _read(self) -> None:
        try:
            by_key = await self.rollups.spend_by_key()
        except Exception as exc:  # the store's or SQLite's: a scrape answers with the last totals
            error_log.warning("cannot read the spend per key from the ledger: %s", exc)
        else:
            spent: dict[str, int] = {}
            for name, micro_usd in by_key.items():
                if name:  # not the rows of a gateway without keys
                    label = self.label(name)
                    spent[label] = spent.get(label, 0) + micro_usd
            self._spent = spent
        finally:
            # After a failure too: a broken store is asked again in `fresh` seconds, not per scrape.
            self._read_at = self.clock()
            self._reading = None

    def collect(self) -> Iterator[Metric]:
        family = CounterMetricFamily(
            NAME,
            "Spend in USD by gateway key name since the ledger began, from its rollups "
            "(metrics.key_labels; rows reach the ledger within a few seconds).",
            labels=("key",),
            unit="usd",
        )
        for label, micro_usd in sorted(self._spent.items()):
            family.add_metric([label], micro_usd / 1_000_000)
        yield family
