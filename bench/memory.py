"""The memory scenario: RSS with 256 and 1000 streams open at once, and after 10,000 streams."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import uvloop

from bench import procs
from bench.client import Tally, run_load
from bench.measure import settle, upstream_stats
from bench.targets import UPSTREAMS, Request, Target

HOLD = UPSTREAMS["hold"]
OPEN_LEVELS = (256, 1000)
SOAK_STREAMS = 10_000
SOAK_CONCURRENCY = 1000
_SOAK_TIMEOUT = 90.0
_SAMPLE_EVERY = 0.05


@dataclass(slots=True)
class MemoryRow:
    target: str
    idle_mb: float = 0.0
    peak_mb: dict[int, float] = field(default_factory=dict)
    open_seen: dict[int, int] = field(default_factory=dict)
    soak: list[tuple[int, float]] = field(default_factory=list)
    soak_seconds: float = 0.0
    errors: int = 0

    @property
    def soak_drift_pct(self) -> float | None:
        """RSS after the last soak checkpoint against the first, in percent."""
        if len(self.soak) < 2 or self.soak[0][1] <= 0:
            return None
        return (self.soak[-1][1] - self.soak[0][1]) / self.soak[0][1] * 100


class _Sampler:
    """A background thread: the peak RSS of the gateway and the most streams open upstream."""

    def __init__(self, pids: list[int], tally: Tally | None = None, every: int = 0) -> None:
        self.pids = pids
        self.tally = tally
        self.every = every
        self.peak_mb = 0.0
        self.open_seen = 0
        self.checkpoints: list[tuple[int, float]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        next_mark = self.every
        while not self._stop.wait(_SAMPLE_EVERY):
            rss = procs.rss_mb(self.pids)
            self.peak_mb = max(self.peak_mb, rss)
            with contextlib.suppress(OSError, ValueError):
                self.open_seen = max(self.open_seen, upstream_stats(HOLD)["streams_open"])
            if self.tally is not None and self.every and self.tally.ok >= next_mark:
                self.checkpoints.append((self.tally.ok, rss))
                next_mark += self.every

    @contextlib.contextmanager
    def running(self) -> Iterator[_Sampler]:
        self._thread.start()
        try:
            yield self
        finally:
            self._stop.set()
            self._thread.join(5)


def measure_memory(
    target: Target, child: procs.Child, hold_seconds: float, soak: bool
) -> MemoryRow:
    row = MemoryRow(target.name)
    pids = procs.tree(child.pid)
    request = target.request("openai", HOLD, stream=True)
    encoded = request.encoded()
    settle(HOLD)
    row.idle_mb = procs.rss_mb(pids)
    for level in OPEN_LEVELS:
        procs.reset_peak(pids)
        with _Sampler(pids).running() as sampler:
            tally = uvloop.run(
                run_load(
                    request.port, encoded, request.markers, concurrency=level, duration=hold_seconds
                )
            )
        row.peak_mb[level] = max(sampler.peak_mb, procs.peak_rss_mb(pids))
        row.open_seen[level] = sampler.open_seen
        row.errors += tally.errors + tally.incomplete
        settle(HOLD)
    if soak:
        _soak(row, pids, request)
    return row


def _soak(row: MemoryRow, pids: list[int], request: Request) -> None:
    """10,000 streams, 1000 at a time; the RSS at every 1000 completed."""
    tally = Tally()
    started = time.monotonic()
    with _Sampler(pids, tally, every=SOAK_CONCURRENCY).running() as sampler:
        uvloop.run(
            run_load(
                request.port,
                request.encoded(),
                request.markers,
                concurrency=SOAK_CONCURRENCY,
                duration=_SOAK_TIMEOUT,
                limit=SOAK_STREAMS,
                tally=tally,
            )
        )
    row.soak_seconds = time.monotonic() - started
    # The last streams may end between two samples: their checkpoint is taken here.
    row.soak = [*sampler.checkpoints, (tally.ok, procs.rss_mb(pids))]
    row.errors += tally.errors + tally.incomplete
    settle(HOLD)
