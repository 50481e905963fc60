"""A local QEMU guest's counters read from the kernel: procfs and cgroups.

For a guest of a local QEMU driver every CPU and memory counter libvirt's bulk
stats call returns is already in a few small files: the QEMU process's
``statm`` (resident memory; ``stat`` for its CPU time where no cgroup keeps
it), each vCPU thread's ``schedstat`` (run time, and time runnable but waiting:
libvirt's ``vcpu.N.delay`` comes from the same file), and the guest's cgroup
(``cpuacct.usage`` on cgroup v1, ``cpu.stat`` on v2,
``memory.pressure`` and ``memory.stat`` where the cgroup has them). Reading
them costs microseconds; asking libvirtd costs it hundreds per guest.

What only QEMU knows is learnt from libvirt, once per guest start: the QEMU
process and its vCPU threads, as libvirt's own status of the running domain
records them (``/run/libvirt/qemu/NAME.xml``: ``<domstatus pid=...>`` and
``<vcpu id=... pid=...>``; asking QEMU's monitor through libvirt would mark
the domain "tainted: custom-monitor"). Nothing is guessed from process names;
the kernel confirms what libvirt wrote (each vCPU thread belongs to that
process and is named as QEMU names it, ``CPU N/KVM`` or ``CPU N/TCG``).

This module reads; :class:`Files` (where one guest's counters are, found once
per start) is what a sampler keeps per guest. Each file is read in one
system call and only the fields used are parsed: a few microseconds each. The
counters come out as :class:`~virtpolicy.hypervisor.stats.GuestCounters`, the
same series with the same units as the bulk call's.
"""

from __future__ import annotations

import functools
import os
import xml.etree.ElementTree as ET
from array import array
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from virtpolicy.hypervisor.domstatus import Balloon
from virtpolicy.hypervisor.procfiles import read_once
from virtpolicy.hypervisor.stats import MISSING, NO_VIEW, GuestCounters, GuestView, VcpuCounters

PROC = Path("/proc")
CGROUPS = Path("/sys/fs/cgroup")
TICKS = os.sysconf("SC_CLK_TCK")
NS_PER_TICK = 1_000_000_000 // TICKS
PAGE = os.sysconf("SC_PAGE_SIZE")
#: Where the system QEMU driver keeps each running domain's status.
STATUS_DIR = Path("/run/libvirt/qemu")


#: How a counter file is read: its bytes, or None when it cannot be.
Reader = Callable[[str | None], bytes | None]


class NotLocal(Exception):
    """This guest's counters cannot be read here (the reason: for the sampler's
    health, which then asks libvirt for this guest)."""


@dataclass(frozen=True, slots=True)
class Threads:
    """A running guest's QEMU process, its vCPU threads (by vCPU index), and
    its cgroup as the process's own ``/proc/PID/cgroup`` names it."""

    pid: int
    vcpus: tuple[int, ...]
    cgroup: Cgroup


@dataclass(frozen=True, slots=True)
class Cgroup:
    """Where a guest's CPU and memory accounting is: the v2 path, or the v1
    controllers' paths (each relative to its hierarchy's mount). libvirt gives
    each guest a group with its emulator thread in ``emulator/`` and each vCPU
    in ``vcpuN/``; the guest's figures are the whole group's, so a trailing
    ``/emulator`` (where the QEMU process itself sits) is left off."""

    v2: str | None
    v1: Mapping[str, str]

    def v1_file(self, root: Path, controller: str, name: str) -> str | None:
        """The guest's group's ``name`` in the v1 ``controller``, if it is there."""
        path = self.v1.get(controller)
        if path is None or path == "/":
            return None
        return _existing(_under(root / _mount(root, controller), _guest_group(path)) / name)

    def v2_file(self, root: Path, name: str) -> str | None:
        """The guest's group's ``name`` on cgroup v2, if it is there."""
        if self.v2 is None or self.v2 == "/":
            return None
        return _existing(_under(root, _guest_group(self.v2)) / name)


@dataclass(frozen=True, slots=True)
class Files:
    """The files a running guest's counters are read from, found once per start
    (a file missing then is not looked for at every sample)."""

    #: The resident memory, where the CPU time is the cgroup's: ``statm`` costs
    #: the kernel a third of ``stat`` (which sums every thread's times).
    statm: str
    #: ("cpuacct", cpuacct.usage) on v1, ("cpu.stat", cpu.stat) on v2, or
    #: ("stat", /proc/PID/stat) where no cgroup keeps the group's CPU time.
    cpu: tuple[str, str]
    schedstat: tuple[str, ...]
    #: v1's memory.stat, or v2's memory.stat; v2's swap and pressure files.
    memory_stat: str | None
    memory_v2: bool
    swap: str | None
    pressure: str | None
    pid: int

    def paths(self) -> tuple[str | None, ...]:
        """Every file named here (what a sampler holding them open lets go of)."""
        return (
            self.statm,
            self.cpu[1],
            *self.schedstat,
            self.memory_stat,
            self.swap,
            self.pressure,
        )


def files_of(threads: Threads, proc: Path = PROC, cgroups: Path = CGROUPS) -> Files:
    """Where ``threads``' guest's counters are, on this host's cgroup layout."""
    base = proc / str(threads.pid)
    group = threads.cgroup
    cpu: tuple[str, str] = ("stat", str(base / "stat"))
    if found := group.v1_file(cgroups, "cpuacct", "cpuacct.usage"):
        cpu = ("cpuacct", found)
    elif found := group.v2_file(cgroups, "cpu.stat"):
        cpu = ("cpu.stat", found)
    v1_memory = group.v1_file(cgroups, "memory", "memory.stat")
    return Files(
        statm=str(base / "statm"),
        cpu=cpu,
        schedstat=tuple(str(base / "task" / str(tid) / "schedstat") for tid in threads.vcpus),
        memory_stat=v1_memory or group.v2_file(cgroups, "memory.stat"),
        memory_v2=v1_memory is None,
        swap=group.v2_file(cgroups, "memory.swap.current"),
        pressure=group.v2_file(cgroups, "memory.pressure"),
        pid=threads.pid,
    )


class Memory(NamedTuple):
    """A guest's memory as its cgroup counts it (KiB; faults and stall counters),
    in the order of :class:`~virtpolicy.hypervisor.stats.GuestCounters`' fields."""

    anon_kib: int
    file_kib: int
    swap_kib: int | None
    major_faults: int | None
    #: Time its tasks stalled waiting for memory (PSI "some" total), ns.
    stall_ns: int | None


def read_memory(files: Files, read: Reader | None = None) -> Memory | None:
    """The guest's memory cgroup's figures; None where it has none."""
    read = read or read_once
    stat = read(files.memory_stat)
    if not stat:
        return None
    if not files.memory_v2:
        swap = _field(stat, b"total_swap")
        return Memory(
            anon_kib=(_field(stat, b"total_rss") or 0) // 1024,
            file_kib=(_field(stat, b"total_cache") or 0) // 1024,
            swap_kib=swap // 1024 if swap is not None else None,
            major_faults=_field(stat, b"total_pgmajfault"),
            stall_ns=None,  # v1 keeps no pressure per group
        )
    swapped = (read(files.swap) or b"").strip()
    swap = int(swapped) if swapped.isdigit() else None
    return Memory(
        anon_kib=(_field(stat, b"anon") or 0) // 1024,
        file_kib=(_field(stat, b"file") or 0) // 1024,
        swap_kib=swap // 1024 if swap is not None else None,
        major_faults=_field(stat, b"pgmajfault"),
        stall_ns=_stalled(read(files.pressure)),
    )


def _field(text: bytes, key: bytes) -> int | None:
    """The number on ``key``'s line of a ``key value`` file (memory.stat, cpu.stat):
    found, not parsed whole (memory.stat has some 40 lines; a few are read)."""
    at = text.find(key + b" ")
    while at > 0 and text[at - 1] != 0x0A:  # within another key: look further
        at = text.find(key + b" ", at + 1)
    if at < 0:
        return None
    end = text.find(b"\n", at)
    value = text[at + len(key) + 1 : end if end >= 0 else len(text)].strip()
    return int(value) if value.isdigit() else None


def _guest_group(path: str) -> str:
    """The guest's group from its QEMU process's (see :class:`Cgroup`)."""
    return path.removesuffix("/emulator") or "/"


def _stalled(text: bytes | None) -> int | None:
    """PSI's "some" total (µs) as ns, from a ``*.pressure`` file."""
    for line in (text or b"").splitlines():
        kind, *pairs = line.split()
        if kind == b"some":
            values = dict(pair.split(b"=", 1) for pair in pairs if b"=" in pair)
            if values.get(b"total", b"").isdigit():
                return int(values[b"total"]) * 1000
    return None


def parse_cgroup(text: str) -> Cgroup:
    """``/proc/PID/cgroup``: ``0::PATH`` is v2, ``N:ctrl,ctrl:PATH`` are v1."""
    v2, v1 = None, {}
    for line in text.splitlines():
        number, _, rest = line.partition(":")
        controllers, _, path = rest.partition(":")
        if number == "0" and controllers == "":
            v2 = path
        else:
            for controller in controllers.split(","):
                v1[controller.removeprefix("name=")] = path
    return Cgroup(v2, v1)


def threads_from_status(status: str, proc: Path = PROC) -> Threads:
    """A running guest's threads from libvirt's status of it, checked against the
    kernel: every vCPU thread belongs to the domain's process and is named as
    QEMU names a vCPU thread. NotLocal when they are not here."""
    try:
        root = ET.fromstring(status)
        pid = int(root.get("pid", ""))
        cpus = sorted(
            (int(v.get("id", "")), int(v.get("pid", ""))) for v in root.iterfind("./vcpus/vcpu")
        )
    except (ET.ParseError, ValueError) as exc:
        raise NotLocal(f"libvirt's status names no process or vCPU threads: {exc}") from None
    if not cpus:
        raise NotLocal("libvirt's status names no vCPU threads")
    tids = tuple(tid for _, tid in cpus)
    owners = {_tgid(proc, tid) for tid in tids}
    if owners != {pid}:
        raise NotLocal(f"the vCPU threads {tids} are not process {pid}'s here")
    for index, tid in cpus:
        name = _read(proc / str(pid) / "task" / str(tid) / "comm") or ""
        if not name.startswith(f"CPU {index}/"):
            raise NotLocal(f"thread {tid} is {name.strip()!r}, not QEMU's vCPU {index}")
    cgroup = parse_cgroup(_read(proc / str(pid) / "cgroup") or "")
    return Threads(pid, tids, cgroup)


def status_of(name: str, directory: Path = STATUS_DIR) -> str:
    """libvirt's status of running guest ``name`` (root's to read); NotLocal
    when it cannot be read here."""
    text = _read(directory / f"{name}.xml")
    if text is None:
        raise NotLocal(f"cannot read libvirt's status of {name} in {directory}")
    return text


def read_counters(
    name: str,
    state: int,
    files: Files,
    *,
    vcpus: bool = True,
    rss: bool = True,
    tail: tuple[object, ...] = (),
    read: Reader | None = None,
) -> GuestCounters:
    """One guest's counters from the kernel: its CPU time; each vCPU's with
    ``vcpus``; its resident memory with ``rss``; then ``tail``, what is read on a
    cadence of its own (:func:`memory_tail`: none by default). ``read``: how a
    file is read (``OpenFiles.read`` holds them open). NotLocal when its process
    is gone (it stopped between the listing and now)."""
    read = read or read_once
    kind, path = files.cpu
    text = read(path)
    statm = read(files.statm) if rss and kind != "stat" else None
    try:
        if text is None or (rss and kind != "stat" and statm is None):
            raise ValueError
        cpu_ns, rss_kib = cpu_and_rss(kind, text, statm)
    except (ValueError, IndexError):
        raise NotLocal(f"process {files.pid} is gone") from None
    found = _vcpus(files.schedstat, read) if vcpus else ()
    kept = rss_kib if rss and rss_kib != MISSING else None
    return _new(GuestCounters, (name, state, cpu_ns, found, kept, *(tail or NO_TAIL)))


def cpu_and_rss(kind: str, text: bytes, statm: bytes | None) -> tuple[int, int]:
    """A guest's CPU time (ns) and resident memory (KiB; MISSING without
    ``statm`` where the CPU file is the cgroup's) from its CPU file's ``text``
    of ``kind`` (see :attr:`Files.cpu`). ValueError or IndexError when the
    text is not such a file's (its process gone)."""
    if not text:
        raise ValueError("empty")
    if kind == "stat":  # the process's utime + stime (fields 14 and 15), rss (24)
        # Split no further than field 24, the 22nd after the ")".
        fields = text.rpartition(b")")[2].split(None, 22)
        return (int(fields[11]) + int(fields[12])) * NS_PER_TICK, int(fields[21]) * PAGE // 1024
    cpu_ns = int(text) if kind == "cpuacct" else (_field(text, b"usage_usec") or 0) * 1000
    if statm is None:
        return cpu_ns, MISSING
    return cpu_ns, int(statm.split(None, 2)[1]) * PAGE // 1024  # size, then resident


#: How a sampler reads one guest from files it holds open: its CPU file's kind
#: and descriptor, its ``statm``'s (-1: not read), each vCPU's ``schedstat``'s.
Plan = tuple[str, int, int, tuple[int, ...]]


def read_packed(plans: Iterable[Plan]) -> array[int]:
    """Every planned guest's numbers as :class:`~virtpolicy.hypervisor.stats.Packed`
    holds them, each file read with one ``pread``: the hottest loop of a sample,
    with no object made per guest but the files' bytes. OSError, ValueError or
    IndexError when a file cannot be read as it was (a process gone)."""
    values: array[int] = array("q")
    extend, pread = values.extend, os.pread
    for kind, cpu, statm, vcpus in plans:
        resident = pread(statm, 4096, 0) if statm >= 0 else None
        extend(cpu_and_rss(kind, pread(cpu, 4096, 0), resident))
        for fd in vcpus:
            run_delay = pread(fd, 256, 0).split()
            extend((int(run_delay[0]), int(run_delay[1])) if len(run_delay) > 1 else _NO_RUN)
    return values


_NO_RUN = (MISSING, MISSING)


def memory_tail(
    memory: Memory | None = None, balloon: Balloon | None = None, view: GuestView = NO_VIEW
) -> tuple[object, ...]:
    """A guest's counters after ``rss_kib``, in their order: ``memory``, its
    cgroup's figures (:func:`read_memory`), and as last known from libvirt the
    ``balloon`` and the guest's own ``view``. Made when they are read (every
    30 s), not per sample."""
    b = balloon
    return (
        (b and b.current_kib, b and b.maximum_kib, *view)
        + (memory or (None,) * len(Memory._fields))
        + (b and b.job, b and b.hugepages)
    )


def _vcpus(paths: tuple[str, ...], read: Reader) -> tuple[VcpuCounters, ...]:
    """Each vCPU thread's run and wait time from its ``schedstat`` (one loop, the
    records made as plain tuples: per vCPU per sample, the hottest loop here)."""
    found = []
    for path in paths:
        run_wait = (read(path) or b"").split()
        found.append(
            _new(VcpuCounters, (int(run_wait[0]), int(run_wait[1]), None))
            if len(run_wait) > 1
            else _NO_VCPU
        )
    return tuple(found)


_new = tuple.__new__
_NO_VCPU = VcpuCounters(None, None, None)
NO_TAIL = memory_tail()


def _tgid(proc: Path, tid: int) -> int | None:
    text = _read(proc / str(tid) / "status")
    for line in (text or "").splitlines():
        if line.startswith("Tgid:"):
            return int(line.split()[1])
    return None


@functools.cache
def _mount(root: Path, controller: str) -> str:
    """The v1 hierarchy's folder under ``root`` holding ``controller``
    (``cpu,cpuacct`` on Debian, or a folder of its own). Looked up once: the
    mounts do not move while the daemon runs."""
    for entry in sorted(root.iterdir()) if root.is_dir() else []:
        if controller in entry.name.split(",") and not entry.is_symlink():
            return entry.name
    return controller


def _under(root: Path, path: str) -> Path:
    return root / path.lstrip("/")


def _existing(path: Path) -> str | None:
    return str(path) if path.exists() else None


def _read(path: Path) -> str | None:
    try:
        return path.read_text()
    except OSError:
        return None
