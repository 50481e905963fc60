"""The sampler's history: a bounded window of every guest's figures.

One slot per sample for a window (default an hour): a shared ring of
timestamps and, per owner (a guest, or "host"), one ring of rows of 4-byte
floats, a column per metric (NaN where there was no value), so memory is fixed
by the window and the number of series (:meth:`History.bytes_for`), and a
sample writes one row per owner, not one value per series.
"""

from __future__ import annotations

import math
import threading
from array import array
from collections.abc import Iterable, Mapping, Sequence
from typing import cast

#: One owner's values of one interval: the metrics' names, then their values.
Row = tuple[tuple[str, ...], Sequence[float | None]]

_NAN = math.nan


def _nan_for_none(values: Iterable[float | None]) -> list[float]:
    return [_NAN if v is None else v for v in values]


class _Owner:
    """One owner's series: a ring of rows of 4-byte floats, a column per metric.
    Its metrics only grow (a column seen once is kept, NaN when absent) until
    the owner is forgotten, so a reader's figures stay in the window after the
    reader has gone."""

    __slots__ = ("blank", "column", "metrics", "ring", "seen")

    def __init__(self, metrics: tuple[str, ...], capacity: int, seen: int) -> None:
        self.metrics = metrics
        self.column = {m: i for i, m in enumerate(metrics)}
        self.blank = array("f", [_NAN]) * len(metrics)
        self.ring = self.blank * capacity
        self.seen = seen

    def widened(self, metrics: Iterable[str], capacity: int, filled: Iterable[int]) -> _Owner:
        """Itself with ``metrics`` among its columns, the old values of the
        ``filled`` slots kept."""
        more = tuple(m for m in metrics if m not in self.column)
        wide = _Owner(self.metrics + more, capacity, self.seen)
        n, w = len(self.metrics), len(wide.metrics)
        for slot in filled:
            wide.ring[slot * w : slot * w + n] = self.ring[slot * n : slot * n + n]
        return wide


class History:
    """A ring of ``capacity`` samples per series; see the module docstring. Each
    owner (a guest, or "host") keeps its series as one ring of rows, so that a
    sample writes one row per owner, not one value per series."""

    def __init__(self, capacity: int) -> None:
        self.capacity = max(1, capacity)
        self.times = array("d", [_NAN]) * self.capacity
        self._owners: dict[str, _Owner] = {}
        self.added = 0  # samples ever added; the newest is at (added - 1) % capacity
        self._lock = threading.Lock()

    def add(self, wall: float, rows: Mapping[str, Row]) -> None:
        with self._lock:
            slot, capacity = self.added % self.capacity, self.capacity
            self.times[slot] = wall
            for name, (metrics, values) in rows.items():
                owner = self._owners.get(name)
                if owner is None:
                    owner = self._owners[name] = _Owner(metrics, capacity, self.added)
                if owner.metrics is metrics or owner.metrics == metrics:  # the same shape
                    # Most rows have no None: made straight from the values.
                    whole = cast("Sequence[float]", values)
                    row = array("f", whole if None not in values else _nan_for_none(values))
                else:  # another shape: a new metric widens it; one it lacks now is NaN
                    if not owner.column.keys() >= set(metrics):
                        filled = range(min(self.added, capacity))
                        owner = self._owners[name] = owner.widened(metrics, capacity, filled)
                    row = array("f", owner.blank)
                    for metric, v in zip(metrics, values, strict=True):
                        row[owner.column[metric]] = _NAN if v is None else v
                n = len(owner.metrics)
                owner.ring[slot * n : slot * n + n] = row
                owner.seen = self.added
            for name in self._owners.keys() - rows.keys():
                owner = self._owners[name]
                if self.added - owner.seen >= capacity:
                    del self._owners[name]  # gone for a whole window: nothing left to show
                else:
                    n = len(owner.metrics)
                    owner.ring[slot * n : slot * n + n] = owner.blank
            self.added += 1

    def window(
        self, owner: str, metrics: Iterable[str], since: float, step: float
    ) -> list[dict[str, float | None]]:
        """Points of ``owner``'s ``metrics`` after ``since`` (unix time), oldest
        first, averaged over buckets of ``step`` seconds (0: every sample)."""
        with self._lock:
            count = min(self.added, self.capacity)
            first = self.added - count
            kept = self._owners.get(owner)
            n = len(kept.metrics) if kept else 0
            columns = {m: kept.column.get(m) if kept else None for m in metrics}
            rows = []
            for s in range(first, self.added):
                slot = s % self.capacity
                t = self.times[slot]
                if t <= since:
                    continue
                values = {
                    m: (kept.ring[slot * n + c] if kept and c is not None else _NAN)
                    for m, c in columns.items()
                }
                rows.append((t, values))
        return _buckets(rows, step)

    def owners(self) -> set[str]:
        with self._lock:  # API threads ask while the sampler adds and forgets
            return set(self._owners)

    def metrics(self, owner: str) -> tuple[str, ...]:
        """The series kept of ``owner`` (none if it has none)."""
        with self._lock:
            kept = self._owners.get(owner)
            return kept.metrics if kept else ()

    def series(self) -> int:
        """How many series are kept, of every owner."""
        with self._lock:
            return sum(len(o.metrics) for o in self._owners.values())

    def bytes_for(self, series: int) -> int:
        """Bytes ``series`` series take for the whole window."""
        return series * self.capacity * 4


def _buckets(
    rows: list[tuple[float, dict[str, float]]], step: float
) -> list[dict[str, float | None]]:
    points: list[dict[str, float | None]] = []
    bucket: list[tuple[float, dict[str, float]]] = []

    def flush() -> None:
        if not bucket:
            return
        point: dict[str, float | None] = {"time": bucket[-1][0]}
        for metric in bucket[0][1]:
            values = [v[metric] for _, v in bucket if not math.isnan(v[metric])]
            point[metric] = round(sum(values) / len(values), 2) if values else None
        points.append(point)
        bucket.clear()

    for t, values in rows:
        if bucket and (step <= 0 or t - bucket[0][0] >= step):
            flush()
        bucket.append((t, values))
    flush()
    return points
