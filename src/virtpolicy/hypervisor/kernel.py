"""A local QEMU guest's counters read from the kernel: procfs and cgroups.

For a guest of a local QEMU driver every CPU and memory counter libvirt's bulk
stats call returns is already in a few small files: the QEMU process's
``stat`` and ``statm``, each vCPU thread's ``schedstat`` (run time, and time
runnable but waiting: libvirt's ``vcpu.N.delay`` comes from the same file),
and the guest's cgroup (``cpuacct.usage`` on cgroup v1, ``cpu.stat`` on v2,
``memory.pressure`` and ``memory.stat`` where the cgroup has them). Reading
them costs microseconds; asking libvirtd costs it hundreds per guest.

What only QEMU knows is learnt from libvirt, once per guest start: the QEMU
process and its vCPU threads, as libvirt's own status of the running domain
records them (``/run/libvirt/qemu/NAME.xml``: ``<domstatus pid=...>`` and
``<vcpu id=... pid=...>``; asking QEMU's monitor through libvirt would mark
the domain "tainted: custom-monitor"). Nothing is guessed from process names;
the kernel confirms what libvirt wrote (each vCPU thread belongs to that
process and is named as QEMU names it, ``CPU N/KVM`` or ``CPU N/TCG``).

This module reads; :class:`Threads` is what a sampler keeps per guest. The
counters come out as :class:`~virtpolicy.hypervisor.stats.GuestCounters`, the
same series with the same units as the bulk call's.
"""

from __future__ import annotations

import functools
import os
import xml.etree.ElementTree as ET
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from virtpolicy.hypervisor.stats import GuestCounters, VcpuCounters

PROC = Path("/proc")
CGROUPS = Path("/sys/fs/cgroup")
TICKS = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")
#: Where the system QEMU driver keeps each running domain's status.
STATUS_DIR = Path("/run/libvirt/qemu")


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
    """Where a process's CPU and memory accounting is: the v2 path, or the v1
    controllers' paths (each relative to its hierarchy's mount)."""

    v2: str | None
    v1: Mapping[str, str]

    def cpu_ns(self, root: Path) -> int | None:
        """The group's CPU time in ns: cpuacct.usage (v1), else cpu.stat's
        usage_usec (v2); None where the group keeps none."""
        if "cpuacct" in self.v1 and self.v1["cpuacct"] != "/":
            usage = _read(
                _under(root / _mount(root, "cpuacct"), self.v1["cpuacct"]) / "cpuacct.usage"
            )
            if usage is not None:
                return int(usage)
        if self.v2 is not None and self.v2 != "/":
            stat = _keyed(_read(_under(root, self.v2) / "cpu.stat"))
            if "usage_usec" in stat:
                return stat["usage_usec"] * 1000
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
    threads: Threads,
    proc: Path = PROC,
    cgroups: Path = CGROUPS,
    *,
    vcpus: bool = True,
) -> GuestCounters:
    """One guest's counters from the kernel (the vCPU threads' only with
    ``vcpus``). NotLocal when its process is gone (it stopped between the
    listing and now)."""
    base = proc / str(threads.pid)
    gone = NotLocal(f"process {threads.pid} is gone")
    statm = _read(base / "statm")
    if statm is None:
        raise gone
    cpu_ns = threads.cgroup.cpu_ns(cgroups)
    if cpu_ns is None:  # the process's utime + stime
        stat = _read(base / "stat")
        if stat is None:
            raise gone
        fields = stat.rpartition(")")[2].split()
        cpu_ns = (int(fields[11]) + int(fields[12])) * 1_000_000_000 // TICKS
    found = []
    for tid in threads.vcpus if vcpus else ():
        sched = (_read(base / "task" / str(tid) / "schedstat") or "").split()
        run, wait = (int(sched[0]), int(sched[1])) if len(sched) >= 2 else (None, None)
        found.append(VcpuCounters(time_ns=run, delay_ns=wait, wait_ns=None))
    return GuestCounters(
        name=name,
        state=state,
        cpu_ns=cpu_ns,
        vcpus=tuple(found),
        memory_kib=None,  # the balloon's: QEMU's, asked of libvirt on its own cadence
        rss_kib=int(statm.split()[1]) * PAGE // 1024,
        memory_max_kib=None,
    )


def memory_pressure(threads: Threads, cgroups: Path = CGROUPS) -> dict[str, float] | None:
    """The cgroup's PSI (v2 ``memory.pressure``): "some"/"full" avg10 in %; None
    where the cgroup has none (v1)."""
    if threads.cgroup.v2 in (None, "/"):
        return None
    text = _read(_under(cgroups, threads.cgroup.v2 or "") / "memory.pressure")
    if text is None:
        return None
    found = {}
    for line in text.splitlines():
        kind, *pairs = line.split()
        values = dict(p.split("=", 1) for p in pairs)
        if "avg10" in values:
            found[kind] = float(values["avg10"])
    return found


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


def _keyed(text: str | None) -> dict[str, int]:
    found = {}
    for line in (text or "").splitlines():
        key, _, value = line.partition(" ")
        if value.strip().isdigit():
            found[key] = int(value)
    return found


def _read(path: Path) -> str | None:
    try:
        return path.read_text()
    except OSError:
        return None
