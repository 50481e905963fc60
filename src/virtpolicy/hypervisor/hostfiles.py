"""The host's own figures from procfs: each CPU's busy and idle time, its
memory, and how much its tasks stall for memory."""

from __future__ import annotations

import os
from pathlib import Path

from virtpolicy.hypervisor import stats
from virtpolicy.hypervisor.kernel import PROC


def host_cpu_times(cpus: int, proc: Path = PROC) -> tuple[tuple[int, int], ...]:
    """(busy, idle) ns of each host CPU from ``/proc/stat``, as libvirt's
    ``virNodeGetCPUStats`` reads them: busy is user + nice + system + irq +
    softirq, idle is idle + iowait."""
    tick_ns = 1_000_000_000 // os.sysconf("SC_CLK_TCK")
    found: dict[int, tuple[int, int]] = {}
    for line in (proc / "stat").read_text().splitlines():
        name, *fields = line.split()
        if not name.startswith("cpu") or name == "cpu":
            continue
        user, nice, system, idle, iowait, irq, softirq = map(int, fields[:7])
        found[int(name[3:])] = (
            (user + nice + system + irq + softirq) * tick_ns,
            (idle + iowait) * tick_ns,
        )
    return tuple(found.get(cpu, (0, 0)) for cpu in range(cpus))


def host_memory(proc: Path = PROC) -> stats.HostMemory | None:
    """The host's memory from ``/proc/meminfo`` (its total and what is available
    without swapping) and how much its tasks stall for memory from
    ``/proc/pressure/memory`` (where the kernel has PSI)."""
    try:
        text = (proc / "meminfo").read_bytes()
    except OSError:
        return None
    found = {}
    for line in text.splitlines():
        name, _, rest = line.partition(b":")
        if name in (b"MemTotal", b"MemAvailable") and rest.split():
            found[name] = int(rest.split()[0])
    total, available = found.get(b"MemTotal"), found.get(b"MemAvailable")
    if not total or available is None:
        return None
    try:
        stall = _stalled_avg10((proc / "pressure" / "memory").read_bytes())
    except OSError:
        stall = None
    return stats.HostMemory(total, available, stall)


def _stalled_avg10(text: bytes) -> float | None:
    """``some avg10`` of a PSI file (%)."""
    for line in text.splitlines():
        if line.startswith(b"some "):
            for part in line.split()[1:]:
                key, _, value = part.partition(b"=")
                if key == b"avg10":
                    return float(value)
    return None
