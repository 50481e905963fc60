"""Utilization rates from libvirt's counters, and a bounded window of history.

:func:`rates` turns two consecutive samples into percentages: each guest's
CPU (of one host CPU: a guest busy on two host CPUs is at 200 %), each
vCPU's, its steal (``vcpu.N.delay``: runnable but waiting for a host CPU)
and wait, its memory; each host CPU's busy share. A counter that went
backwards (the guest restarted) or a field that is missing gives no rate
for that interval rather than a spike.

:class:`History` keeps one slot per sample for a window (default an hour):
a shared ring of timestamps and, per series, a ring of 4-byte floats (NaN
where there was no value), so memory is fixed by the window and the number
of series: :meth:`History.bytes_for`.
"""

from __future__ import annotations

import functools
import math
import threading
import time
from array import array
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

from virtpolicy.hypervisor.stats import HOST_MEMORY, GuestCounters, HostMemory, Sample

DEFAULT_INTERVAL_S = 5.0
DEFAULT_WINDOW_S = 3600.0
RECENT_S = 60.0  # the tuners's default window


class VcpuRates(NamedTuple):
    percent: float | None
    steal_percent: float | None
    wait_percent: float | None


class GuestRates(NamedTuple):
    """One guest over one interval. Per-vCPU values are kept as columns of
    plain tuples of numbers, which the garbage collector stops tracking: the
    monitor keeps a minute of them for 1,000 guests and more (as an object
    per vCPU, a full collection took about 90 ms in the balance benchmark)."""

    guest: str
    running: bool
    cpu_percent: float | None
    vcpu_percent: tuple[float | None, ...]
    vcpu_steal_percent: tuple[float | None, ...]
    vcpu_wait_percent: tuple[float | None, ...]
    memory_kib: int | None
    rss_kib: int | None
    memory_max_kib: int | None
    cpu_ns: int | None  # the counter itself, for Prometheus
    available_kib: int | None = None  # the guest's view (its balloon driver)
    unused_kib: int | None = None
    #: Its memory cgroup's (a local QEMU guest's; see GuestCounters).
    anon_kib: int | None = None
    file_kib: int | None = None
    swap_kib: int | None = None
    major_faults: int | None = None  # counters, for Prometheus
    memory_stall_ns: int | None = None
    #: Share of the interval its tasks stalled for memory (PSI "some").
    memory_stall_percent: float | None = None
    #: The guest's own: what it could use without swapping; over the interval,
    #: KiB it swapped in per second and major faults per second.
    usable_kib: int | None = None
    guest_swap_in_rate: float | None = None
    guest_major_fault_rate: float | None = None
    job: str | None = None  # as in GuestCounters
    hugepages: bool | None = None

    @property
    def vcpus(self) -> tuple[VcpuRates, ...]:
        """Each vCPU as a record (made on each call; hot loops read the columns)."""
        return tuple(
            VcpuRates(*t)
            for t in zip(
                self.vcpu_percent, self.vcpu_steal_percent, self.vcpu_wait_percent, strict=True
            )
        )

    def to_dict(self) -> dict[str, object]:
        return {
            "guest": self.guest,
            "running": self.running,
            "cpu_percent": _round(self.cpu_percent),
            "vcpus": [
                {
                    "vcpu": i,
                    "percent": _round(v.percent),
                    "steal_percent": _round(v.steal_percent),
                    "wait_percent": _round(v.wait_percent),
                }
                for i, v in enumerate(self.vcpus)
            ],
            "memory_kib": self.memory_kib,
            "rss_kib": self.rss_kib,
            "memory_max_kib": self.memory_max_kib,
            "memory_available_kib": self.available_kib,
            "memory_unused_kib": self.unused_kib,
            "memory_anon_kib": self.anon_kib,
            "memory_file_kib": self.file_kib,
            "memory_swap_kib": self.swap_kib,
            "memory_major_faults_total": self.major_faults,
            "memory_stall_percent": _round(self.memory_stall_percent),
            "memory_usable_kib": self.usable_kib,
            "memory_guest_swap_in_kib_per_second": _round(self.guest_swap_in_rate),
            "memory_guest_major_faults_per_second": _round(self.guest_major_fault_rate),
            "cpu_seconds_total": None if self.cpu_ns is None else self.cpu_ns / 1e9,
        }


@dataclass(frozen=True, slots=True)
class Rates:
    """What one interval says: the time at its end, each guest, each host CPU."""

    wall: float
    interval: float
    guests: Mapping[str, GuestRates]
    host_busy_percent: tuple[float | None, ...]
    host_memory: HostMemory | None = None


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 2)


def _per_cent(now: int | None, before: int | None, elapsed_ns: float) -> float | None:
    if now is None or before is None or now < before or elapsed_ns <= 0:
        return None
    return (now - before) / elapsed_ns * 100.0


def _guest_rates(now: GuestCounters, before: GuestCounters | None, ns: float) -> GuestRates:
    fresh = before is None or not before.running or not now.running
    cpu = None if fresh or before is None else _per_cent(now.cpu_ns, before.cpu_ns, ns)
    used, steal, wait = [], [], []
    for i, v in enumerate(now.vcpus):
        b = None if fresh or before is None or i >= len(before.vcpus) else before.vcpus[i]
        used.append(_per_cent(v.time_ns, b.time_ns, ns) if b else None)
        steal.append(_per_cent(v.delay_ns, b.delay_ns, ns) if b else None)
        wait.append(_per_cent(v.wait_ns, b.wait_ns, ns) if b else None)
    return GuestRates(
        now.name,
        now.running,
        cpu,
        tuple(used),
        tuple(steal),
        tuple(wait),
        now.memory_kib,
        now.rss_kib,
        now.memory_max_kib,
        now.cpu_ns,
        now.available_kib,
        now.unused_kib,
        now.anon_kib,
        now.file_kib,
        now.swap_kib,
        now.major_faults,
        now.memory_stall_ns,
        None
        if fresh or before is None
        else _per_cent(now.memory_stall_ns, before.memory_stall_ns, ns),
        now.usable_kib,
        None
        if before is None
        else _per_second(now.guest_swap_in_kib, before.guest_swap_in_kib, ns),
        None
        if before is None
        else _per_second(now.guest_major_faults, before.guest_major_faults, ns),
        now.job,
        now.hugepages,
    )


def _per_second(now: int | None, before: int | None, elapsed_ns: float) -> float | None:
    per_cent = _per_cent(now, before, elapsed_ns)
    return None if per_cent is None else per_cent * 1e7


def rates(now: Sample, before: Sample | None) -> Rates:
    """The rates over the interval between two samples (none the first time)."""
    ns = (now.monotonic - before.monotonic) * 1e9 if before else 0.0
    guests = {
        name: _guest_rates(g, before.guests.get(name) if before else None, ns)
        for name, g in now.guests.items()
    }
    host: list[float | None] = []
    for cpu, (busy, idle) in enumerate(now.host_cpus):
        if before is None or cpu >= len(before.host_cpus):
            host.append(None)
            continue
        d_busy, d_idle = busy - before.host_cpus[cpu][0], idle - before.host_cpus[cpu][1]
        total = d_busy + d_idle
        host.append(d_busy / total * 100.0 if d_busy >= 0 and d_idle >= 0 and total > 0 else None)
    return Rates(now.wall, ns / 1e9, guests, tuple(host), now.host_memory)


#: One owner's values of one interval: the metrics' names, then their values.
Row = tuple[tuple[str, ...], Sequence[float | None]]


@functools.cache
def _guest_metrics(vcpus: int, stall: bool, memory: bool, usable: bool) -> tuple[str, ...]:
    optional = (("memory_stall", stall), ("memory_kib", memory), ("usable_kib", usable))
    return (
        "cpu",
        "rss_kib",
        *(name for name, present in optional if present),
        *(f"vcpu.{i}" for i in range(vcpus)),
        *(f"steal.{i}" for i in range(vcpus)),
    )


@functools.cache
def _host_metrics(cpus: int) -> tuple[str, ...]:
    return tuple(f"cpu.{cpu}" for cpu in range(cpus))


def series_of(r: Rates) -> dict[str, Row]:
    """The values one interval adds to the history, a row per guest and one for
    the "host". A guest's metrics: "cpu", "rss_kib"; where sampled,
    "memory_stall", "memory_kib" (the balloon's), "usable_kib"; "vcpu.N" and
    "steal.N" for each vCPU (the names made once per shape, not per sample)."""
    out: dict[str, Row] = {}
    for name, g in r.guests.items():
        stall, memory, usable = g.memory_stall_percent, g.memory_kib, g.usable_kib
        metrics = _guest_metrics(
            len(g.vcpu_percent), stall is not None, memory is not None, usable is not None
        )
        head: tuple[float | None, ...] = (g.cpu_percent, g.rss_kib)
        if stall is not None or memory is not None or usable is not None:
            head += tuple(v for v in (stall, memory, usable) if v is not None)
        out[name] = (metrics, head + g.vcpu_percent + g.vcpu_steal_percent)
    out["host"] = (_host_metrics(len(r.host_busy_percent)), r.host_busy_percent)
    return out


_NAN = math.nan


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
                elif owner.metrics != metrics and not owner.column.keys() >= set(metrics):
                    filled = range(min(self.added, capacity))
                    owner = self._owners[name] = owner.widened(metrics, capacity, filled)
                n = len(owner.metrics)
                if owner.metrics == metrics:
                    row = array("f", [_NAN if v is None else v for v in values])
                else:  # fewer than it has had: the others are NaN
                    row = array("f", owner.blank)
                    for metric, v in zip(metrics, values, strict=True):
                        row[owner.column[metric]] = _NAN if v is None else v
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


#: How long a reader's interest in a stats group keeps it collected.
WANTED_S = 300.0
#: How often the host's memory is read when nothing asks for memory figures.
HOST_MEMORY_S = 30.0


@dataclass
class Monitor:
    """The sampler's state: the last sample, the last rates, the history, health."""

    interval: float = DEFAULT_INTERVAL_S
    window: float = DEFAULT_WINDOW_S
    last: Sample | None = None
    latest: Rates | None = None
    samples: int = 0
    errors: int = 0
    last_error: str = ""
    last_duration: float = 0.0
    #: The host's memory as last sampled (not every sample reads it).
    host_memory: HostMemory | None = None
    history: History = field(init=False)
    #: How many seconds of the newest rates themselves to keep, for dynamic
    #: policies. Only as many as they look at: at 1,000 guests one sample is
    #: some 5,000 objects for the garbage collector to walk.
    keep: float = RECENT_S
    recent: deque[Rates] = field(init=False)

    #: Optional stats groups always collected (those the tuners read).
    always: frozenset[str] = frozenset()
    #: Optional stats group -> when a reader last asked for it (monotonic).
    wanted: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._host_memory_at = -math.inf
        self.history = History(int(self.window / self.interval))
        self.recent = deque(maxlen=max(2, int(self.keep / self.interval) + 1))

    def want(self, *groups: str) -> None:
        """A reader uses these optional groups ("vcpu", "balloon"): collect them for
        the next :data:`WANTED_S` seconds. Until a reader asks, per-vCPU and memory
        figures are not collected, which is most of libvirtd's cost of a sample."""
        now = time.monotonic()
        for group in groups:
            self.wanted[group] = now

    def groups(self) -> frozenset[str]:
        """The optional groups to collect in the next sample; the host's memory
        every :data:`HOST_MEMORY_S` seconds whatever is read (for the fleet)."""
        now = time.monotonic()
        # A copy: readers on the loop add to it while the sampler's thread looks.
        recent = {g for g, at in list(self.wanted.items()) if now - at < WANTED_S}
        if now - self._host_memory_at >= HOST_MEMORY_S:
            self._host_memory_at = now
            recent.add(HOST_MEMORY)
        return self.always | recent

    def ingest(self, sample: Sample, duration: float) -> Rates:
        """Take one sample: derive its rates and keep them."""
        r = rates(sample, self.last)
        self.last, self.latest = sample, r
        self.host_memory = sample.host_memory or self.host_memory
        self.samples += 1
        self.last_duration = duration
        if self.samples > 1:  # the first sample only sets the base
            self.history.add(sample.wall, series_of(r))
            self.recent.append(r)
        return r

    def failed(self, error: str) -> None:
        self.errors += 1
        self.last_error = error
