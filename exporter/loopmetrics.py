"""Counters and histograms touched only on the event loop's thread: no lock per update.

The two per-request families (status requests, their latency) use these; prometheus-client's
own types take a lock per increment and walk the buckets in Python per observation.
"""

from __future__ import annotations

import math
from bisect import bisect_left
from itertools import accumulate
from typing import Any, Iterator, Sequence

from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString


class LoopCounter:
    """A counter incremented only on the event loop's thread, so without a lock.

    prometheus-client takes a lock per increment (and walks the buckets in Python per
    observation): with two of them per status request that was ~5 % of a poll's CPU. The two
    per-request families use these; `LoopFamily` exposes them exactly like a `Counter` and a
    `Histogram` with the same names, help and labels.
    """

    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value = 0.0

    def inc(self, amount: float = 1.0) -> None:
        if amount < 0:
            raise ValueError("Counters can only be incremented by non-negative amounts.")
        self.value += amount


class LoopHistogram:
    """A histogram observed only on the event loop's thread (see `LoopCounter`)."""

    __slots__ = ("upper", "counts", "sum")

    def __init__(self, buckets: Sequence[float]) -> None:
        self.upper = tuple(float(b) for b in buckets) + (math.inf,)
        self.counts = [0] * len(self.upper)
        self.sum = 0.0

    def observe(self, amount: float) -> None:
        self.counts[bisect_left(self.upper, amount)] += 1  # the first bucket with amount <= le
        self.sum += amount


class LoopFamily(Collector):
    """`LoopCounter`s (or `LoopHistogram`s with `buckets`) per (provider, account)."""

    def __init__(self, name: str, documentation: str, buckets: Sequence[float] | None = None) -> None:
        self.name = name
        self.documentation = documentation
        self.buckets = buckets
        self.children: dict[tuple[str, str], LoopCounter | LoopHistogram] = {}

    def labels(self, provider: str, account: str) -> Any:
        child = self.children.get((provider, account))
        if child is None:
            child = LoopCounter() if self.buckets is None else LoopHistogram(self.buckets)
            self.children[(provider, account)] = child
        return child

    def _family(self) -> CounterMetricFamily | HistogramMetricFamily:
        kind = CounterMetricFamily if self.buckets is None else HistogramMetricFamily
        return kind(self.name, self.documentation, labels=["provider", "account"])

    def describe(self) -> Iterator[Metric]:
        yield self._family()

    def collect(self) -> Iterator[Metric]:
        family = self._family()
        for lv, child in list(self.children.items()):
            if isinstance(child, LoopCounter) and isinstance(family, CounterMetricFamily):
                family.add_metric(list(lv), child.value)
            elif isinstance(child, LoopHistogram) and isinstance(family, HistogramMetricFamily):
                cumulative = list(accumulate(child.counts))
                family.add_metric(
                    list(lv), [(floatToGoString(le), float(n)) for le, n in zip(child.upper, cumulative)], child.sum
                )
        yield family
