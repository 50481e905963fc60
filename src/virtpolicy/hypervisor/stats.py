"""Raw utilization counters from libvirt: one bulk call for every guest.

``virConnectGetAllDomainStats`` with the state, cpu-total, vcpu and balloon
groups gives, in one round trip, what a per-guest loop would need four calls
per guest for; the host's per-CPU times come from ``virNodeGetCPUStats``,
one call per host CPU. Counters are kept as libvirt gives them
(nanoseconds, KiB); rates are derived in :mod:`virtpolicy.engine.tuners.monitor`.
A field a driver does not report (the test driver reports only state) is
None, never 0, so that it cannot turn into a spike.
"""

from __future__ import annotations

import time
from array import array
from collections.abc import Collection, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import libvirt

RUNNING: int = libvirt.VIR_DOMAIN_RUNNING
#: Always asked for: what a guest's state and CPU % need.
BASE_GROUPS = libvirt.VIR_DOMAIN_STATS_STATE | libvirt.VIR_DOMAIN_STATS_CPU_TOTAL
#: Asked for only when something reads them (see Monitor.groups): per vCPU
#: and memory are most of libvirtd's cost of a sample.
OPTIONAL_GROUPS = {
    "vcpu": libvirt.VIR_DOMAIN_STATS_VCPU,
    "balloon": libvirt.VIR_DOMAIN_STATS_BALLOON,
}
#: With "balloon": its figures read every sample, not on their own slower
#: cadence (what the memory tuner acts on must be the newest).
MEMORY_NOW = "memory-now"
#: The host's memory alone (its daemon publishes it with its heartbeat): asked
#: for on a slow cadence of its own; every sample only for a reader of the
#: host's figures ("host") and the memory tuner.
HOST_MEMORY = "host-memory"
#: The host CPUs' times: one call per host CPU (libvirt has no bulk call for
#: them), so also only when read.
HOST_GROUP = "host"
ALL_GROUPS = frozenset({*OPTIONAL_GROUPS, HOST_GROUP})
#: For a guest busy with a job (a migration, a save), figures that would wait
#: for QEMU are left out of that sample rather than waited for.
NOWAIT = getattr(libvirt, "VIR_CONNECT_GET_ALL_DOMAINS_STATS_NOWAIT", 0)


# Counters are NamedTuples, not frozen dataclasses: a sampler makes one per
# guest (and per vCPU) at every sample, and a frozen dataclass of twenty fields
# costs twice as much to make (each field set through object.__setattr__).


class VcpuCounters(NamedTuple):
    time_ns: int | None
    delay_ns: int | None  # waiting in the host's run queue (the guest's steal time)
    wait_ns: int | None


class GuestCounters(NamedTuple):
    name: str
    state: int
    cpu_ns: int | None
    vcpus: tuple[VcpuCounters, ...]
    rss_kib: int | None
    #: From here on, what a sampler reads on a cadence of its own (every field
    #: after rss_kib: see kernel.memory_tail).
    memory_kib: int | None  # balloon.current
    memory_max_kib: int | None
    #: The guest's own view, from its balloon driver (None without one).
    available_kib: int | None = None
    unused_kib: int | None = None
    #: What it could use without swapping (its MemAvailable); since its boot,
    #: the KiB it swapped in and its major faults (the balloon driver's).
    usable_kib: int | None = None
    guest_swap_in_kib: int | None = None
    guest_major_faults: int | None = None
    #: The guest's memory cgroup's (the kernel path only; None through libvirt):
    #: anonymous and page-cache memory, swap, major faults, and the time its
    #: tasks stalled for memory (PSI, ns; v2 only). Counters where named so.
    anon_kib: int | None = None
    file_kib: int | None = None
    swap_kib: int | None = None
    major_faults: int | None = None
    memory_stall_ns: int | None = None
    #: From libvirt's status of the guest (the kernel path only): its long job
    #: ("migration out", ...; "" none) and whether huge pages back its memory.
    job: str | None = None
    hugepages: bool | None = None

    @property
    def running(self) -> bool:
        return self.state == RUNNING


#: Where a guest's counters read on their own cadence begin (after ``rss_kib``),
#: and the place of each among them.
TAIL = GuestCounters._fields.index("rss_kib") + 1
TAIL_AT = {name: i for i, name in enumerate(GuestCounters._fields[TAIL:])}


@dataclass(frozen=True, slots=True)
class HostMemory:
    """The host's memory, in KiB; ``stall``: the share of the last ten seconds
    its tasks stalled for memory (PSI ``some avg10``, %; None where unknown)."""

    total_kib: int
    available_kib: int
    stall: float | None = None

    @property
    def used_percent(self) -> float:
        return 100.0 * (self.total_kib - self.available_kib) / max(1, self.total_kib)

    def to_dict(self) -> dict[str, float | None]:
        """As the API and the fleet's host records give it."""
        return {
            "total_kib": self.total_kib,
            "available_kib": self.available_kib,
            "used_percent": round(self.used_percent, 1),
            "stall_percent": self.stall,
        }


#: A missing counter in :class:`Packed` values (counters are never negative).
MISSING = -1


@dataclass(frozen=True, slots=True, eq=False)
class Shape:
    """Which guests a :class:`Packed` sample holds, in order, and where each
    one's numbers are. Made when a guest starts, stops or changes state (or
    what is read changes), and shared by every sample until then: two samples
    of the same shape hold the same guests at the same places."""

    names: tuple[str, ...]
    states: tuple[int, ...]
    #: Where each guest's numbers begin: its CPU time, its resident memory,
    #: then run and delay time of each vCPU read (``vcpus`` of them).
    offsets: tuple[int, ...]
    vcpus: tuple[int, ...]
    index: Mapping[str, int]

    @classmethod
    def of(cls, guests: list[tuple[str, int, int]]) -> Shape:
        """From (name, state, vCPUs read) of each guest."""
        offsets, at = [], 0
        for _, _, vcpus in guests:
            offsets.append(at)
            at += 2 + 2 * vcpus
        names = tuple(name for name, _, _ in guests)
        return cls(
            names,
            tuple(state for _, state, _ in guests),
            tuple(offsets),
            tuple(vcpus for _, _, vcpus in guests),
            {name: i for i, name in enumerate(names)},
        )


class Packed(Mapping[str, GuestCounters]):
    """Guests' counters as one array of numbers per sample, not objects: what a
    sampler of local guests makes every few seconds for every guest. Made as
    :class:`GuestCounters` only when asked for one (a reader, a tuner); the
    history's rows are made from the numbers (see monitor.rows_of). Guests
    read otherwise (through libvirt, or not running) are in ``others``."""

    __slots__ = ("numbers", "others", "shape", "tails")

    def __init__(
        self,
        shape: Shape,
        numbers: array[int],
        tails: tuple[tuple[Any, ...], ...],
        others: Mapping[str, GuestCounters],
    ) -> None:
        self.shape = shape
        #: Per guest at its offset: CPU ns, resident KiB, then (run ns, delay ns)
        #: of each vCPU; MISSING where a counter could not be read.
        self.numbers = numbers
        #: Per guest, its counters after ``rss_kib`` (read on their own cadence).
        self.tails = tails
        self.others = others

    def __getitem__(self, name: str) -> GuestCounters:
        i = self.shape.index.get(name)
        return self.others[name] if i is None else self.counters(i)

    def __contains__(self, name: object) -> bool:
        return name in self.shape.index or name in self.others

    def __iter__(self) -> Iterator[str]:
        yield from self.shape.names
        yield from self.others

    def __len__(self) -> int:
        return len(self.shape.names) + len(self.others)

    def counters(self, i: int) -> GuestCounters:
        """The ``i``-th guest of the shape's counters."""
        shape, v = self.shape, self.numbers
        at = shape.offsets[i]
        vcpus = tuple(
            VcpuCounters(_kept(v[j]), _kept(v[j + 1]), None)
            for j in range(at + 2, at + 2 + 2 * shape.vcpus[i], 2)
        )
        head = (shape.names[i], shape.states[i], _kept(v[at]), vcpus, _kept(v[at + 1]))
        return _new(GuestCounters, head + self.tails[i])


_new = tuple.__new__


def _kept(value: int) -> int | None:
    return None if value == MISSING else value


@dataclass(frozen=True, slots=True)
class Sample:
    """Every guest's counters and each host CPU's (busy, idle) nanoseconds, at once."""

    monotonic: float
    wall: float
    guests: Mapping[str, GuestCounters]
    host_cpus: tuple[tuple[int, int], ...]
    #: Where the counters came from: "kernel" (procfs and cgroups, for a local
    #: QEMU driver) or "libvirt" (its bulk call).
    source: str = "libvirt"
    #: Guests the kernel path could not read, sampled through libvirt: why.
    fallback: Mapping[str, str] = field(default_factory=dict)
    #: With the "balloon" group: the host's memory.
    host_memory: HostMemory | None = None


def _int(stats: Mapping[str, Any], key: str) -> int | None:
    value = stats.get(key)
    return int(value) if value is not None else None


def parse_domain_stats(name: str, stats: Mapping[str, Any]) -> GuestCounters:
    """One record of ``getAllDomainStats`` as counters."""
    count = _int(stats, "vcpu.current") or 0
    vcpus = tuple(
        VcpuCounters(
            _int(stats, f"vcpu.{i}.time"),
            _int(stats, f"vcpu.{i}.delay"),
            _int(stats, f"vcpu.{i}.wait"),
        )
        for i in range(count)
    )
    return GuestCounters(
        name=name,
        state=_int(stats, "state.state") or 0,
        cpu_ns=_int(stats, "cpu.time"),
        vcpus=vcpus,
        memory_kib=_int(stats, "balloon.current"),
        rss_kib=_int(stats, "balloon.rss"),
        memory_max_kib=_int(stats, "balloon.maximum"),
        **guest_view(stats)._asdict(),
    )


class GuestView(NamedTuple):
    """A guest's own view of its memory, as its balloon driver reports it."""

    available_kib: int | None = None
    unused_kib: int | None = None
    usable_kib: int | None = None
    guest_swap_in_kib: int | None = None
    guest_major_faults: int | None = None


NO_VIEW = GuestView()


def guest_view(stats: Mapping[str, Any]) -> GuestView:
    """The balloon driver's figures of one record of libvirt's statistics."""
    return GuestView(
        _int(stats, "balloon.available"),
        _int(stats, "balloon.unused"),
        _int(stats, "balloon.usable"),
        _int(stats, "balloon.swap_in"),
        _int(stats, "balloon.major_fault"),
    )


def flags_of(groups: Collection[str]) -> int:
    """The bulk call's flags for state, CPU time and the optional ``groups``."""
    flags: int = BASE_GROUPS
    for group in groups:
        flags |= OPTIONAL_GROUPS.get(group, 0)
    return flags


def host_cpu_times(conn: libvirt.virConnect, cpus: int) -> tuple[tuple[int, int], ...]:
    """(busy, idle) nanoseconds of each host CPU; busy is kernel + user, idle
    includes iowait."""
    times = []
    for cpu in range(cpus):
        s = conn.getCPUStats(cpu, 0)
        times.append(
            (
                int(s.get("kernel", 0)) + int(s.get("user", 0)),
                int(s.get("idle", 0)) + int(s.get("iowait", 0)),
            )
        )
    return tuple(times)


def collect(
    conn: libvirt.virConnect, cpus: int, groups: Collection[str] = ALL_GROUPS, nowait: int = NOWAIT
) -> Sample:
    """One bulk call for the guests (state, CPU and the optional ``groups``), and
    with the "host" group one call per host CPU. ``nowait``: the flag that keeps a
    guest's job from holding the call (0 where the driver refuses it)."""
    wall, mono = time.time(), time.monotonic()
    guests = {
        (name := dom.name()): parse_domain_stats(name, stats)
        for dom, stats in conn.getAllDomainStats(flags_of(groups), nowait)
    }
    host = host_cpu_times(conn, cpus) if HOST_GROUP in groups else ()
    memory = host_memory(conn) if wants_host_memory(groups) else None
    return Sample(mono, wall, guests, host, host_memory=memory)


def wants_host_memory(groups: Collection[str]) -> bool:
    """Whether a sample of these groups reads the host's memory: for a reader
    of the host's figures, for the memory tuner, and on its own slow cadence
    (a reader of the guests' memory alone does not show it)."""
    return HOST_MEMORY in groups or HOST_GROUP in groups or MEMORY_NOW in groups


def host_memory(conn: libvirt.virConnect) -> HostMemory | None:
    """The host's memory as libvirt tells it (no stall figure: PSI is the
    host's own); None where the driver does not say."""
    try:
        found = conn.getMemoryStats(libvirt.VIR_NODE_MEMORY_STATS_ALL_CELLS, 0)
    except libvirt.libvirtError:
        return None
    free = sum(int(found.get(k, 0)) for k in ("free", "buffers", "cached"))
    total = int(found.get("total", 0))
    return HostMemory(total, free) if total > 0 else None


def collect_per_guest(conn: libvirt.virConnect, cpus: int) -> Sample:
    """The same counters with calls per guest, the way a per-guest poller (oVirt's
    MoM) gets them: for the benchmark that compares the two."""
    wall, mono = time.time(), time.monotonic()
    guests = {}
    for dom in conn.listAllDomains():
        name = dom.name()
        state = dom.state()[0]
        stats: dict[str, Any] = {"state.state": state}
        if state == RUNNING:
            total = dom.getCPUStats(True)[0]
            stats["cpu.time"] = total.get("cpu_time")
            infos, _pins = dom.vcpus()
            stats["vcpu.current"] = len(infos)
            for number, _state, cpu_time, _cpu in infos:
                stats[f"vcpu.{number}.time"] = cpu_time
            memory = dom.memoryStats()
            stats["balloon.current"] = memory.get("actual")
            stats["balloon.rss"] = memory.get("rss")
            stats["balloon.maximum"] = dom.maxMemory()
            stats["balloon.available"] = memory.get("available")
            stats["balloon.unused"] = memory.get("unused")
            stats["balloon.usable"] = memory.get("usable")
            stats["balloon.swap_in"] = memory.get("swap_in")
            stats["balloon.major_fault"] = memory.get("major_fault")
        guests[name] = parse_domain_stats(name, stats)
    return Sample(mono, wall, guests, host_cpu_times(conn, cpus))
