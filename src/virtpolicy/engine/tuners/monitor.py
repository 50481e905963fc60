"""Utilization rates from libvirt's counters, and a bounded window of history.

:func:`rates` turns two consecutive samples into percentages: each guest's
CPU (of one host CPU: a guest busy on two host CPUs is at 200 %), each
vCPU's, its steal (``vcpu.N.delay``: runnable but waiting for a host CPU)
and wait, its memory; each host CPU's busy share. A counter that went
backwards (the guest restarted) or a field that is missing gives no rate
for that interval rather than a spike.

:class:`Monitor` keeps the history's rows of every interval
(:func:`~virtpolicy.engine.tuners.intervals.rows_of`) and makes the rates
only when they are read.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple, cast

from virtpolicy.engine.tuners.history import History
from virtpolicy.engine.tuners.intervals import (
    elapsed_ns,
    host_busy,
    packed_vcpu_shares,
    per_cent,
    ran_throughout,
    rows_of,
    vcpu_shares,
)
from virtpolicy.hypervisor.stats import (
    HOST_MEMORY,
    MISSING,
    RUNNING,
    TAIL,
    TAIL_AT,
    GuestCounters,
    HostMemory,
    Packed,
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


def _guest_rates(now: GuestCounters, before: GuestCounters | None, ns: float) -> GuestRates:
    ran = ran_throughout(now, before)
    return _rates_of(
        now.name,
        now.running,
        None if ran is None else ran.cpu_ns,
        now.cpu_ns,
        vcpu_shares(now, ran, ns),
        now.rss_kib,
        now[TAIL:],
        None if before is None else before[TAIL:],
        ns,
        ran is not None,
    )


def _packed_rates(out: dict[str, GuestRates], now: Packed, before: Packed, ns: float) -> None:
    """:func:`_guest_rates` of every guest of two samples of one shape, from
    their numbers: the same rates, with no guest's counters made."""
    shape, new, old = now.shape, now.numbers, before.numbers
    for i, name in enumerate(shape.names):
        at, running = shape.offsets[i], shape.states[i] == RUNNING  # the same in both
        rss = new[at + 1]
        out[name] = _rates_of(
            name,
            running,
            old[at],
            new[at],
            packed_vcpu_shares(new, old, at, shape.vcpus[i], ns if running else 0.0),
            None if rss == MISSING else rss,
            now.tails[i],
            before.tails[i],
            ns,
            running,
        )


#: Each vCPU's run, steal and wait shares (see vcpu_shares).
Shares = tuple[tuple[float | None, ...], tuple[float | None, ...], tuple[float | None, ...]]


def _rates_of(
    name: str,
    running: bool,
    was_cpu: int | None,
    cpu: int | None,
    shares: Shares,
    rss: int | None,
    tail: tuple[Any, ...],
    was: tuple[Any, ...] | None,
    ns: float,
    ran: bool,
) -> GuestRates:
    """One guest's rates: its CPU and vCPU shares (``ran``: it ran throughout the
    interval), its memory now, and the figures after ``rss_kib`` of its
    counters now (``tail``) and at the interval's start (``was``: None without one)."""
    (memory, most, available, unused, usable, swap_in, faults) = tail[:7]
    (anon, file, swap, major, stall, job, huge) = tail[7:]
    return GuestRates(
        name,
        running,
        per_cent(cpu, was_cpu, ns) if ran else None,
        shares[0],
        shares[1],
        shares[2],
        memory,
        rss,
        most,
        cpu,
        available,
        unused,
        anon,
        file,
        swap,
        major,
        stall,
        per_cent(stall, was[_STALL], ns) if ran and was is not None else None,
        usable,
        None if was is None else _per_second(swap_in, was[_SWAP_IN], ns),
        None if was is None else _per_second(faults, was[_FAULTS], ns),
        job,
        huge,
    )


#: The tail's fields in the order _rates_of takes them apart.
_TAIL_FIELDS = (
    "memory_kib", "memory_max_kib", "available_kib", "unused_kib", "usable_kib",
    "guest_swap_in_kib", "guest_major_faults", "anon_kib", "file_kib", "swap_kib",
    "major_faults", "memory_stall_ns", "job", "hugepages",
)  # fmt: skip
if GuestCounters._fields[TAIL:] != _TAIL_FIELDS:  # pragma: no cover - a field added or moved
    raise ImportError("GuestCounters' fields after rss_kib are not as _rates_of reads them")
_STALL, _SWAP_IN, _FAULTS = (
    TAIL_AT[name] for name in ("memory_stall_ns", "guest_swap_in_kib", "guest_major_faults")
)


def _per_second(now: int | None, before: int | None, ns: float) -> float | None:
    share = per_cent(now, before, ns)
    return None if share is None else share * 1e7


def rates(now: Sample, before: Sample | None) -> Rates:
    """The rates over the interval between two samples (none the first time)."""
    ns = elapsed_ns(now, before)
    out: dict[str, GuestRates] = {}
    guests, prior = now.guests, before.guests if before else {}
    if isinstance(guests, Packed) and isinstance(prior, Packed) and guests.shape is prior.shape:
        _packed_rates(out, guests, prior, ns)  # the same guests at the same places
        guests, prior = guests.others, prior.others
    for name, g in guests.items():
        out[name] = _guest_rates(g, prior.get(name) if before else None, ns)
    return Rates(now.wall, ns / 1e9, out, host_busy(now, before), now.host_memory)


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
