"""Counters, gauges and histograms for one process, at a fraction of prometheus_client's cost.

prometheus_client takes a lock per value and walks the buckets in Python (~2.4 us per histogram
observation measured here); the event loop is the only writer, so a child here is plain
attributes and a bisect (~0.2 us). A scrape turns them into prometheus_client's metric families,
so the exposition is the library's. ``serve --workers N`` uses prometheus_client's own classes
instead: their multiprocess mode is what lets one scrape sum every worker.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterator, Sequence
from typing import Any

from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector, CollectorRegistry
from prometheus_client.utils import floatToGoString


class _Value:
    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value = 0.0

    def inc(self, amount: float = 1) -> None:
        self.value += amount

    def dec(self, amount: float = 1) -> None:
        self.value -= amount

    def set(self, value: float) -> None:
        self.value = value


class _Buckets:
    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        # counts[i]: observations in (bounds[i-1], bounds[i]]; the last one is +Inf's.
        self.counts = [0] * (len(bounds) + 1)
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1
        self.sum += value


class _Family(Collector):
    """One metric: its children by label values (a family without labels is its own child)."""

    kind = ""

    def __init__(
        self,
        name: str,
        documentation: str,
        labelnames: Sequence[str] = (),
        *,
        registry: CollectorRegistry,
        unit: str = "",
        buckets: Sequence[float] = (),
        **_: Any,
    ) -> None:
        self.name = name
        self.documentation = documentation
        self.labelnames = tuple(labelnames)
        self.unit = unit
        self.bounds = tuple(float(b) for b in buckets)
        self.children: dict[tuple[str, ...], Any] = {}
        self._single = None if self.labelnames else self.labels()
        registry.register(self)

    def labels(self, *values: Any) -> Any:
        key = tuple(str(v) for v in values)
        child = self.children.get(key)
        if child is None:
            child = self.children[key] = self._child()
        return child

    def _child(self) -> Any:
        return _Value()

    def inc(self, amount: float = 1) -> None:
        self._single.inc(amount)  # type: ignore[union-attr]

    def dec(self, amount: float = 1) -> None:
        self._single.dec(amount)  # type: ignore[union-attr]

    def observe(self, value: float) -> None:
        self._single.observe(value)  # type: ignore[union-attr]

    def collect(self) -> Iterator[Metric]:
        family = self._family()
        for key, child in self.children.items():
            self._add(family, list(key), child)
        yield family

    def _family(self) -> Any:
        raise NotImplementedError

    def _add(self, family: Any, values: list[str], child: Any) -> None:
        family.add_metric(values, child.value)


class Counter(_Family):
    def _family(self) -> Any:
        return CounterMetricFamily(
            self.name, self.documentation, labels=self.labelnames, unit=self.unit
        )


class Gauge(_Family):
    def _family(self) -> Any:
        return GaugeMetricFamily(
            self.name, self.documentation, labels=self.labelnames, unit=self.unit
        )


class Histogram(_Family):
    def _child(self) -> Any:
        return _Buckets(self.bounds)

    def _family(self) -> Any:
        return HistogramMetricFamily(
            self.name, self.documentation, labels=self.labelnames, unit=self.unit
        )

    def _add(self, family: Any, values: list[str], child: Any) -> None:
        cumulative = 0
        buckets = []
        for bound, count in zip((*self.bounds, float("inf")), child.counts, strict=True):
            cumulative += count
            buckets.append((floatToGoString(bound), cumulative))  # type: ignore[no-untyped-call]
        family.add_metric(values, buckets, child.sum)
