"""Utilization rates from libvirt's counters, and a bounded window of history.

:func:`rates` turns two consecutive samples into percentages: each guest's
CPU (of one host CPU: a guest busy on two host CPUs is at 200 %), each
vCPU's, its steal (``vcpu.N.delay``: runnable but waiting for a host CPU)
and wait, its memory; each host CPU's busy share. A counter that went
backwards (the guest restarted) or a field that is missing gives no rate
for that interval rather than a spike.

:func:`rows_of` makes the rows a
:class:`~virtpolicy.engine.tuners.history.History` keeps for a window
straight from the counters: the sampler keeps every interval's figures, and
most intervals nobody reads the rates themselves.
"""

from __future__ import annotations

import functools
import math
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import NamedTuple, cast

from virtpolicy.engine.tuners.history import History, Row
from virtpolicy.hypervisor.stats import (
    HOST_MEMORY,
    RUNNING,
    GuestCounters,
    HostMemory,
    Sample,
)

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

    def to_dict(self, **first: object) -> dict[str, object]:
        """As a reader gets it: ``first``'s keys, then the guest's (made for every
        guest at every answer: the shares rounded inline, not through a call)."""
        return {
            **first,
            "guest": self.guest,
            "running": self.running,
            "cpu_percent": _round(self.cpu_percent),
            "vcpus": [
                {
                    "vcpu": i,
                    "percent": None if used is None else round(used, 2),
                    "steal_percent": None if steal is None else round(steal, 2),
                    "wait_percent": None if wait is None else round(wait, 2),
                }
                for i, (used, steal, wait) in enumerate(
                    zip(
                        self.vcpu_percent,
                        self.vcpu_steal_percent,
                        self.vcpu_wait_percent,
                        strict=True,
                    )
                )
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
    """How much ``now`` moved since ``before`` as a share of the interval (None
    without either, when it went back, or without an interval)."""
    return _share(now, before, elapsed_ns) if elapsed_ns > 0 else None


def _from(now: GuestCounters, before: GuestCounters | None) -> GuestCounters | None:
    """``before`` if the guest ran at both ends of the interval (else no share of
    it is known: it started, stopped or restarted in between)."""
    if before is None or before.state != RUNNING or now.state != RUNNING:
        return None
    return before


def _vcpu_shares(
    now: GuestCounters, before: GuestCounters | None, ns: float
) -> tuple[tuple[float | None, ...], tuple[float | None, ...], tuple[float | None, ...]]:
    """Each vCPU's run, steal and wait time as shares of one host CPU over the
    interval, in one pass (per guest per sample, and per answer: a hot loop);
    None for each without ``before`` (the guest did not run throughout: see
    :func:`_from`) or without an interval, and for a vCPU it did not have."""
    vcpus = now.vcpus
    if not vcpus:  # not sampled (nothing reads them): nothing to make
        return _NO_SHARES
    if before is None or ns <= 0:
        nones = (None,) * len(vcpus)
        return nones, nones, nones
    old = before.vcpus
    used, steal, wait = [], [], []
    for i, (run, delay, waited) in enumerate(vcpus):
        was_run, was_delay, was_waited = old[i] if i < len(old) else (None, None, None)
        used.append(_share(run, was_run, ns))
        steal.append(_share(delay, was_delay, ns))
        wait.append(_share(waited, was_waited, ns))
    return tuple(used), tuple(steal), tuple(wait)


_NO_SHARES: tuple[tuple[float | None, ...], tuple[float | None, ...], tuple[float | None, ...]] = (
    (),
    (),
    (),
)


def _share(now: int | None, before: int | None, ns: float) -> float | None:
    """:func:`_per_cent` for an interval known to be longer than 0."""
    return (
        (now - before) / ns * 100.0
        if now is not None and before is not None and now >= before
        else None
    )


def _guest_rates(now: GuestCounters, before: GuestCounters | None, ns: float) -> GuestRates:
    ran = _from(now, before)
    return GuestRates(
        now.name,
        now.running,
        None if ran is None else _per_cent(now.cpu_ns, ran.cpu_ns, ns),
        *_vcpu_shares(now, ran, ns),
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
        None if ran is None else _per_cent(now.memory_stall_ns, ran.memory_stall_ns, ns),
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


def _elapsed_ns(now: Sample, before: Sample | None) -> float:
    return (now.monotonic - before.monotonic) * 1e9 if before else 0.0


def _host_busy(now: Sample, before: Sample | None) -> tuple[float | None, ...]:
    """Each host CPU's busy share over the interval."""
    host: list[float | None] = []
    for cpu, (busy, idle) in enumerate(now.host_cpus):
        if before is None or cpu >= len(before.host_cpus):
            host.append(None)
            continue
        d_busy, d_idle = busy - before.host_cpus[cpu][0], idle - before.host_cpus[cpu][1]
        total = d_busy + d_idle
        host.append(d_busy / total * 100.0 if d_busy >= 0 and d_idle >= 0 and total > 0 else None)
    return tuple(host)


def rates(now: Sample, before: Sample | None) -> Rates:
    """The rates over the interval between two samples (none the first time)."""
    ns = _elapsed_ns(now, before)
    guests = {
        name: _guest_rates(g, before.guests.get(name) if before else None, ns)
        for name, g in now.guests.items()
    }
    return Rates(now.wall, ns / 1e9, guests, _host_busy(now, before), now.host_memory)


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


def rows_of(now: Sample, before: Sample | None) -> dict[str, Row]:
    """The values one interval adds to the history, straight from the counters
    (the rates themselves are made only when read: see :attr:`Monitor.latest`):
    a row per guest and one for the "host". A guest's metrics: "cpu",
    "rss_kib"; where sampled, "memory_stall", "memory_kib" (the balloon's),
    "usable_kib"; "vcpu.N" and "steal.N" for each vCPU (the names made once per
    shape, not per sample). Each value is its :class:`GuestRates` field's.

    Per guest per sample, the hottest loop after reading the files: each row is
    one list (2-3 µs a guest; 4-7 before, joining tuples)."""
    ns = _elapsed_ns(now, before)
    prior = before.guests if before else {}
    out: dict[str, Row] = {}
    for name, g in now.guests.items():
        vcpus, memory, usable = g.vcpus, g.memory_kib, g.usable_kib
        ran = _from(g, prior.get(name)) if ns > 0 else None
        if ran is None:
            stall = None
            values: list[float | None] = [None, g.rss_kib]
        else:
            stall = _per_cent(g.memory_stall_ns, ran.memory_stall_ns, ns)
            values = [_per_cent(g.cpu_ns, ran.cpu_ns, ns), g.rss_kib]
        for optional in (stall, memory, usable):
            if optional is not None:
                values.append(optional)
        used, steal, _ = _vcpu_shares(g, ran, ns)
        values += used
        values += steal
        metrics = _guest_metrics(
            len(vcpus), stall is not None, memory is not None, usable is not None
        )
        out[name] = (metrics, values)
    if now.host_cpus:  # only while the host CPUs are sampled
        out["host"] = (_host_metrics(len(now.host_cpus)), _host_busy(now, before))
    return out


#: How long a reader's interest in a stats group keeps it collected.
WANTED_S = 300.0
#: How often the host's memory is read when nothing asks for memory figures.
HOST_MEMORY_S = 30.0


@dataclass
class Monitor:
    """The sampler's state: the last sample, the last rates, the history, health."""

    interval: float = DEFAULT_INTERVAL_S
    window: float = DEFAULT_WINDOW_S
    samples: int = 0
    errors: int = 0
    last_error: str = ""
    last_duration: float = 0.0
    #: The host's memory as last sampled (not every sample reads it).
    host_memory: HostMemory | None = None
    history: History = field(init=False)
    #: How many seconds of the newest rates themselves to keep, for dynamic
    #: policies. Only as many as they look at: at 1,000 guests one sample is
    #: some 5,000 objects for the garbage collector to walk. With 0, none are
    #: kept, nor made unless something reads them.
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
        #: The last two samples, replaced at once (API threads read them while
        #: the sampler's thread samples), and the rates between them once made.
        self._pair: tuple[Sample | None, Sample | None] = (None, None)
        self._rated: tuple[Sample, Rates] | None = None

    @property
    def last(self) -> Sample | None:
        """The newest sample's counters."""
        return self._pair[0]

    @property
    def latest(self) -> Rates | None:
        """The rates over the last interval (none yet after the first sample,
        which only sets the base), made when first read after each sample: most
        intervals nobody reads them (the history's rows come from the counters)."""
        now, before = self._pair
        if now is None:
            return None
        rated = self._rated
        if rated is None or rated[0] is not now:
            rated = self._rated = (now, rates(now, before))
        return rated[1]

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

    def ingest(self, sample: Sample, duration: float) -> None:
        """Take one sample: its figures into the history, and the rates
        themselves kept for the tuners (only while they act: :attr:`keep`)."""
        before = self._pair[0]
        self._pair = (sample, before)
        self.host_memory = sample.host_memory or self.host_memory
        self.samples += 1
        self.last_duration = duration
        if self.samples > 1:  # the first sample only sets the base
            self.history.add(sample.wall, rows_of(sample, before))
            if self.keep > 0:
                self.recent.append(cast("Rates", self.latest))

    def failed(self, error: str) -> None:
        self.errors += 1
        self.last_error = error
