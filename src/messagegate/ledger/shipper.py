"""Shipping journalled rows to the database in batches: a row is inserted once whatever happens
(its request id is the ledger's key), so re-reading a journal after a crash never double-counts.
A database outage leaves the rows in the journal for the next try."""

from __future__ import annotations

import asyncio
import logging
import os
from pathlib import Path

from messagegate.ledger.journal import Journal, Segment, claim_segments, read_rows
from messagegate.store.base import LedgerStore

error_log = logging.getLogger("messagegate.error")

SHIP_INTERVAL = 1.0
# Rows per batch: each costs a transaction and a trip to the store's thread (~800,000 instructions,
# 400 a row at 2,000), and, for rows read back from a file, a decode on the loop (~16 million
# instructions, some ms, at 2,000).
BATCH_ROWS = 2000
# Shipping rounds at shutdown, at most (each ships what the one before left; the rest stays
# journalled for the next start).
FINAL_ROUNDS = 8


class Shipper:
    def __init__(
        self, journal: Journal, store: LedgerStore, interval: float = SHIP_INTERVAL
    ) -> None:
        self.journal = journal
        self.store = store
        self.interval = interval
        # How far this process's own file is shipped (other files are shipped whole).
        self.offset = 0
        self.shipped_path: Path | None = None
        self.task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self.task = asyncio.create_task(self._loop())

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            try:
                await self.ship_once()
            except Exception as exc:
                error_log.warning("cannot ship ledger rows (they stay journalled): %s", exc)

    async def ship_once(self) -> int:
        """Ship what the journal holds now; rows journalled meanwhile wait for the next call (a
        batch taken from memory may carry a few of them along). Under load, a shipper chasing
        the journal's end would ship the few dozen rows of each wait for the store, paying a
        transaction and two thread hand-offs each time. Rows shipped."""
        own = self.journal.path
        end = self.journal.size
        segments = await asyncio.to_thread(
            lambda: list(claim_segments(self.journal.directory, own))
        )
        shipped = 0
        try:
            for segment in segments:
                shipped += await self._ship(segment, own, end)
        finally:
            for segment in segments:
                if segment.fd >= 0:
                    os.close(segment.fd)
        return shipped

    async def _ship(self, segment: Segment, own: Path, end: int) -> int:
        own_file = segment.fd < 0
        if own_file and self.shipped_path != own:
            self.shipped_path, self.offset = own, 0
        offset = self.offset if own_file else 0
        shipped = 0
        while True:
            start = offset
            if own_file and self.journal.path == own:
                # Still being written: its rows up to `end`, as the journal holds them, or read
                # from its map on the loop (decoding holds the GIL: a thread would not spare the
                # loop the time).
                if offset >= end:
                    break
                batch, offset = self.journal.rows_from(offset, BATCH_ROWS)
            else:
                batch, offset = await asyncio.to_thread(read_rows, segment.path, offset, BATCH_ROWS)
            if not batch.lines:
                break
            shipped += await self.store.ship(batch)
            if own_file:
                self.offset = offset
                if self.journal.path == own:
                    self.journal.shipped(start, offset, len(batch.lines))
        if not own_file:
            await asyncio.to_thread(segment.path.unlink, True)
        return shipped

    async def stop(self) -> None:
        """Stop the loop, then ship what is left (a graceful shutdown leaves nothing behind)."""
        if self.task is not None:
            self.task.cancel()
            await asyncio.gather(self.task, return_exceptions=True)
            self.task = None
        try:
            # Each round ships what the one before left behind (rows of answers that ended
            # meanwhile), until nothing is left.
            for _ in range(FINAL_ROUNDS):
                await self.ship_once()
                if self._caught_up():
                    break
        except Exception as exc:
            error_log.warning("ledger rows left in the journal for the next start: %s", exc)

    def _caught_up(self) -> bool:
        """Whether this process's own file is shipped to its end."""
        journal = self.journal
        return journal.size == 0 or (
            self.shipped_path == journal.path and self.offset >= journal.size
        )
