"""Sampling a local QEMU driver at the kernel's floor.

libvirt is asked for what only it and QEMU know: each guest's state (listed
once, then followed from libvirt's lifecycle events: :class:`Domains`), each
running guest's process and vCPU threads (libvirt's status of it, read once
per start), and the balloon's figures (on their own cadence, and only while
something reads memory). A sample then costs libvirtd nothing. Every CPU
counter and the resident memory come from procfs and the guest's cgroup
(:mod:`virtpolicy.hypervisor.kernel`), the cgroup's memory figures on the
balloon's cadence; the host CPUs' times from ``/proc/stat``.

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
    CGROUPS,
    PROC,
    STATUS_DIR,
    Files,
    Memory,
    NotLocal,
    files_of,
    read_counters,
    read_memory,
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


#: libvirt's states a domain's lifecycle events leave it in (see Domains.event).
_PAUSED = libvirt.VIR_DOMAIN_PAUSED
_SHUTOFF = libvirt.VIR_DOMAIN_SHUTOFF
#: Even with every event heard, the domains are listed again this often (s).
RELIST_S = 300.0


class Domains:
    """Every domain's ID (-1: not running) and state, from one listing and then
    libvirt's lifecycle events: a sample asks libvirtd nothing (a listing of
    states costs it some 80 µs per guest on this lab's machine). Events arrive
    on the loop's thread, samples read in a worker: the mapping is replaced
    whole, never changed in place. Listed again when an event could not be
    followed (a crash), on a new connection (a new sampler), and every
    :data:`RELIST_S`."""

    def __init__(self) -> None:
        self.known: dict[str, tuple[int, int]] = {}
        #: Whether events are heard on this connection (else list every sample).
        self.watched = False
        self._stale = True
        self._listed_at = -RELIST_S
        self._version = 0  # moves with each event: a listing older than one is dropped

    def due(self, now: float) -> int | None:
        """The version to hand :meth:`listed` when a listing is due now, else None."""
        if not self.watched or self._stale or now - self._listed_at >= RELIST_S:
            return self._version
        return None

    def listed(self, found: dict[str, tuple[int, int]], version: int, now: float) -> None:
        """A listing begun at ``version`` (from :meth:`due`)."""
        if version == self._version:  # no event came in meanwhile
            self.known, self._stale, self._listed_at = found, False, now
        else:
            self._stale = True

    def event(self, dom: Any, event: int, detail: int) -> None:
        """A lifecycle event (on the loop's thread)."""
        self._version += 1
        name, was = dom.name(), self.known.get(dom.name())
        ev = libvirt  # the constants' module, for short
        if event == ev.VIR_DOMAIN_EVENT_STARTED:
            # An incoming migration's guest is paused until it is done.
            migrating = detail == ev.VIR_DOMAIN_EVENT_STARTED_MIGRATED
            now: tuple[int, int] | None = (dom.ID(), _PAUSED if migrating else stats.RUNNING)
        elif event == ev.VIR_DOMAIN_EVENT_RESUMED and was is not None:
            now = (was[0], stats.RUNNING)
        elif event == ev.VIR_DOMAIN_EVENT_SUSPENDED and was is not None:
            now = (was[0], _PAUSED)
        elif event == ev.VIR_DOMAIN_EVENT_PMSUSPENDED and was is not None:
            now = (was[0], libvirt.VIR_DOMAIN_PMSUSPENDED)
        elif event == ev.VIR_DOMAIN_EVENT_STOPPED:
            now = (-1, _SHUTOFF)
        elif event == ev.VIR_DOMAIN_EVENT_DEFINED:
            now = was or (-1, _SHUTOFF)
        elif event == ev.VIR_DOMAIN_EVENT_UNDEFINED:
            now = was if was is not None and was[0] >= 0 else None  # running: transient
        elif event == ev.VIR_DOMAIN_EVENT_SHUTDOWN:
            return  # the guest's OS is done; STOPPED follows
        else:  # a crash, or an event about a guest not known: list again
            self._stale = True
            return
        known = dict(self.known)
        if now is None:
            known.pop(name, None)
        else:
            known[name] = now
        self.known = known


class LocalSampler:
    """Keeps where each running guest's counters are (by domain ID: a new start is
    a new ID) and the balloon's latest figures between samples."""

    def __init__(self, status_dir: Path, proc: Path = PROC, cgroups: Path = CGROUPS) -> None:
        self.status_dir = status_dir
        self.proc = proc
        self.cgroups = cgroups
        self.domains = Domains()
        self._files: dict[tuple[str, int], Files] = {}
        self._memory: dict[tuple[str, int], Memory | None] = {}
        self._memory_at = -BALLOON_S
        self._balloon: dict[str, stats.GuestCounters] = {}
        self._balloon_at = -BALLOON_S

    def collect(
        self, conn: libvirt.virConnect, cpus: int, groups: Collection[str], nowait: int
    ) -> stats.Sample:
        wall, mono = time.time(), time.monotonic()
        version = self.domains.due(mono)
        if version is not None:
            records = conn.getAllDomainStats(libvirt.VIR_DOMAIN_STATS_STATE, nowait)
            self.domains.listed(
                {d.name(): (d.ID(), int(r.get("state.state", 0))) for d, r in records},
                version,
                mono,
            )
        # The cgroup's memory figures move slowly and cost the most to read:
        # read on the balloon's cadence, and kept in between.
        memory_due = mono - self._memory_at >= BALLOON_S
        guests: dict[str, stats.GuestCounters] = {}
        fallback: dict[str, str] = {}
        away: list[str] = []
        live: set[tuple[str, int]] = set()
        for name, (number, state) in self.domains.known.items():
            if number < 0:  # not active: no process to read (paused ones are read)
                guests[name] = stats.GuestCounters(name, state, None, (), None, None, None)
                continue
            key = (name, number)
            live.add(key)
            try:
                files = self._files.get(key) or files_of(
                    threads_from_status(status_of(name, self.status_dir), self.proc),
                    self.proc,
                    self.cgroups,
                )
                self._files[key] = files
                memory = None
                if "balloon" in groups:
                    memory = (
                        read_memory(files)
                        if memory_due or key not in self._memory
                        else self._memory[key]
                    )
                    self._memory[key] = memory
                guests[name] = read_counters(
                    name,
                    state,
                    files,
                    vcpus="vcpu" in groups,
                    rss="balloon" in groups,
                    memory=memory,
                )
            except NotLocal as exc:
                fallback[name] = str(exc)
                away.append(name)
        for key in set(self._files) - live:  # stopped, or started again
            del self._files[key]
            self._memory.pop(key, None)
        if memory_due and "balloon" in groups:
            self._memory_at = mono
        flags = stats.BASE_GROUPS
        for group in groups:
            flags |= stats.OPTIONAL_GROUPS.get(group, 0)
        for name in away:  # these through libvirt, as before: each on its own
            try:
                [(_, record)] = conn.domainListGetStats([conn.lookupByName(name)], flags, nowait)
            except libvirt.libvirtError as exc:
                if exc.get_error_code() != libvirt.VIR_ERR_NO_DOMAIN:
                    raise
                continue  # gone since the listing
            guests[name] = stats.parse_domain_stats(name, record)
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
