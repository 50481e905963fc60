"""Sampling a local QEMU driver at the kernel's floor.

libvirt is asked for what only it and QEMU know: each guest's state (the
bulk call's state group, which costs libvirtd little), each running guest's
process and vCPU threads (libvirt's status of it, read once per start), and
the balloon's figures (on their own cadence, and only while something reads
memory). Every CPU counter and the resident memory come from procfs and the
guest's cgroup (:mod:`virtpolicy.hypervisor.kernel`); the host CPUs' times
from ``/proc/stat``.

A guest whose files cannot be read here is sampled by libvirt's bulk call, as
before, and named with the reason in the sample's ``fallback``: the same
series with the same names and units either way.
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Collection
from pathlib import Path
from typing import Any

import libvirt

from virtpolicy.hypervisor import stats
from virtpolicy.hypervisor.kernel import (
    PROC,
    STATUS_DIR,
    NotLocal,
    Threads,
    read_counters,
    status_of,
    threads_from_status,
)

#: How often the balloon's figures are asked of libvirt while they are read (s).
BALLOON_S = 30.0
#: The URIs whose guests are this machine's processes, with their status folder.
LOCAL = {"qemu:///system": STATUS_DIR}


def local_status_dir(uri: str) -> Path | None:
    """Where libvirt keeps running guests' status for ``uri``, when its guests
    run here and that folder can be read; else None (sample through libvirt)."""
    folder = LOCAL.get(uri)
    return folder if folder is not None and os.access(folder, os.R_OK | os.X_OK) else None


class LocalSampler:
    """Keeps each running guest's threads (by domain ID: a new start is a new
    ID) and the balloon's latest figures between samples."""

    def __init__(self, status_dir: Path, proc: Path = PROC) -> None:
        self.status_dir = status_dir
        self.proc = proc
        self._threads: dict[tuple[str, int], Threads] = {}
        self._balloon: dict[str, stats.GuestCounters] = {}
        self._balloon_at = -BALLOON_S

    def collect(
        self, conn: libvirt.virConnect, cpus: int, groups: Collection[str], nowait: int
    ) -> stats.Sample:
        wall, mono = time.time(), time.monotonic()
        records = conn.getAllDomainStats(libvirt.VIR_DOMAIN_STATS_STATE, nowait)
        guests: dict[str, stats.GuestCounters] = {}
        fallback: dict[str, str] = {}
        away: list[Any] = []
        live: set[tuple[str, int]] = set()
        for dom, record in records:
            name, state = dom.name(), int(record.get("state.state", 0))
            if state != stats.RUNNING:
                guests[name] = stats.GuestCounters(name, state, None, (), None, None, None)
                continue
            key = (name, dom.ID())
            live.add(key)
            try:
                threads = self._threads.get(key) or threads_from_status(
                    status_of(name, self.status_dir), self.proc
                )
                self._threads[key] = threads
                guests[name] = read_counters(
                    name, state, threads, self.proc, vcpus="vcpu" in groups
                )
            except NotLocal as exc:
                fallback[name] = str(exc)
                away.append(dom)
        for key in set(self._threads) - live:  # stopped, or started again
            del self._threads[key]
        flags = stats.BASE_GROUPS
        for group in groups:
            flags |= stats.OPTIONAL_GROUPS.get(group, 0)
        for dom in away:  # these through libvirt, as before: each on its own
            try:
                [(_, record)] = conn.domainListGetStats([dom], flags, nowait)
            except libvirt.libvirtError as exc:
                if exc.get_error_code() != libvirt.VIR_ERR_NO_DOMAIN:
                    raise
                continue  # gone since the listing
            guests[dom.name()] = stats.parse_domain_stats(dom.name(), record)
        if "balloon" in groups:
            self._with_balloon(conn, guests, fallback, mono, nowait)
        host = host_cpu_times(cpus, self.proc) if stats.HOST_GROUP in groups else ()
        return stats.Sample(mono, wall, guests, host, source="kernel", fallback=fallback)

    def _with_balloon(
        self,
        conn: libvirt.virConnect,
        guests: dict[str, stats.GuestCounters],
        fallback: dict[str, str],
        mono: float,
        nowait: int,
    ) -> None:
        """The balloon's figures (QEMU's), asked of libvirt every BALLOON_S."""
        if mono - self._balloon_at >= BALLOON_S:
            self._balloon_at = mono
            flags = libvirt.VIR_DOMAIN_STATS_BALLOON
            self._balloon = {
                dom.name(): stats.parse_domain_stats(dom.name(), record)
                for dom, record in conn.getAllDomainStats(flags, nowait)
            }
        for name, counters in guests.items():
            known = self._balloon.get(name)
            if known is None or name in fallback:
                continue
            guests[name] = dataclasses.replace(
                counters,
                memory_kib=known.memory_kib,
                memory_max_kib=known.memory_max_kib,
                available_kib=known.available_kib,
                unused_kib=known.unused_kib,
            )


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
