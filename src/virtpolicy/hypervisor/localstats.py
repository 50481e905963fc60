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

import contextlib
import os
import time
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import libvirt

from virtpolicy.hypervisor import stats
from virtpolicy.hypervisor.domstatus import Balloon, read_balloon
from virtpolicy.hypervisor.hostfiles import host_cpu_times, host_memory
from virtpolicy.hypervisor.kernel import (
    CGROUPS,
    NO_TAIL,
    PROC,
    STATUS_DIR,
    Files,
    Memory,
    NotLocal,
    Plan,
    files_of,
    memory_tail,
    read_counters,
    read_memory,
    read_packed,
    status_of,
    threads_from_status,
)
from virtpolicy.hypervisor.procfiles import OpenFiles

#: How often the balloon's figures are asked of libvirt while they are read (s).
BALLOON_S = 30.0


def local_status_dir(uri: str, env: Mapping[str, str] = os.environ) -> Path | None:
    """Where libvirt keeps running guests' status for ``uri``, when its guests
    are this machine's processes and that folder can be read; else None (sample
    through libvirt). The system driver's is under /run; a session driver's
    (this user's own libvirt) under the user's runtime directory, or the cache
    directory where there is none, as libvirt chooses it."""
    if uri == "qemu:///system":
        folder = STATUS_DIR
    elif uri == "qemu:///session":
        runtime = env.get("XDG_RUNTIME_DIR")
        home = Path(env.get("HOME") or Path.home())
        base = Path(runtime) if runtime else Path(env.get("XDG_CACHE_HOME") or home / ".cache")
        folder = base / "libvirt" / "qemu" / "run"
    else:
        return None
    return folder if os.access(folder, os.R_OK | os.X_OK) else None


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
        name = dom.name()
        was, ev = self.known.get(name), libvirt  # the constants' module, for short
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
        self._status_prefix = f"{status_dir}{os.sep}"
        self.proc = proc
        self.cgroups = cgroups
        self.domains = Domains()
        self.open = OpenFiles()
        self._files: dict[tuple[str, int], Files] = {}
        self._plan: _Plan | None = None
        self._memory: dict[tuple[str, int], _Memory] = {}
        self._memory_at = -BALLOON_S
        #: The domains as last sampled: while they stay the same object, no guest
        #: started or stopped, and no file is to be let go of.
        self._known: Mapping[str, tuple[int, int]] = {}

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
        fresh = stats.MEMORY_NOW in groups  # the memory tuner: every sample
        memory_due = fresh or mono - self._memory_at >= BALLOON_S
        if "balloon" in groups:  # for the guests read before: a new one's next time
            self._ask_guests(conn, mono, nowait, 0.0 if fresh else BALLOON_S)
        known = self.domains.known
        if known is not self._known:  # a guest started or stopped: let go of the gone
            self._let_go(known)
        memory, vcpus = "balloon" in groups, "vcpu" in groups
        guests: Mapping[str, stats.GuestCounters] | None
        fallback: dict[str, str] = {}
        guests = self._packed(known, vcpus, memory, memory_due)
        if guests is None:
            guests, fallback = self._one_by_one(conn, known, groups, memory_due, nowait)
        if memory_due and memory:
            self._memory_at = mono
        host = host_cpu_times(cpus, self.proc) if stats.HOST_GROUP in groups else ()
        host_mem = host_memory(self.proc) if stats.wants_host_memory(groups) else None
        return stats.Sample(
            mono, wall, guests, host, source="kernel", fallback=fallback, host_memory=host_mem
        )

    def _one_by_one(
        self,
        conn: libvirt.virConnect,
        known: Mapping[str, tuple[int, int]],
        groups: Collection[str],
        memory_due: bool,
        nowait: int,
    ) -> tuple[dict[str, stats.GuestCounters], dict[str, str]]:
        """Each guest's counters read on its own, those of a guest that cannot
        be read here through libvirt; and why, for each of those."""
        guests: dict[str, stats.GuestCounters] = {}
        fallback: dict[str, str] = {}
        away: list[str] = []
        read = self._read if "balloon" in groups else self._read_cpu
        vcpus = "vcpu" in groups
        for name, (number, state) in known.items():
            if number < 0:  # not active: no process to read (paused ones are read)
                guests[name] = stats.GuestCounters(name, state, None, (), None, None, None)
                continue
            try:
                guests[name] = read((name, number), state, vcpus, memory_due)
            except NotLocal as exc:
                fallback[name] = str(exc)
                away.append(name)
        guests.update(_through_libvirt(conn, away, groups, nowait))
        return guests, fallback

    def _packed(
        self, known: Mapping[str, tuple[int, int]], vcpus: bool, memory: bool, memory_due: bool
    ) -> stats.Packed | None:
        """Every guest's counters in one pass over the files held open for them
        (:func:`~virtpolicy.hypervisor.kernel.read_packed`), or None where a
        guest is not sampled here (it goes through libvirt) or a file cannot be
        read as it was (a process gone since the listing): that sample is then
        taken guest by guest, as before, with the reasons."""
        plan = self._plan
        if plan is None or plan.known is not known or plan.vcpus != vcpus or plan.memory != memory:
            plan = self._plan = self._plan_of(known, vcpus, memory)
            if plan is None:
                return None
        if memory:  # the memory figures, every guest's on their cadence
            for key, files in plan.files:
                held = self._memory.get(key)
                if held is None or memory_due:
                    self._memory[key] = self._memory_of(key[0], files, held)
            tails = tuple(self._memory[key].tail for key, _ in plan.files)
        else:
            tails = plan.no_tails
        try:
            values = read_packed(plan.reads)
        except (OSError, ValueError, IndexError):
            self._plan = None
            return None
        return stats.Packed(plan.shape, values, tails, plan.others)

    def _plan_of(
        self, known: Mapping[str, tuple[int, int]], vcpus: bool, memory: bool
    ) -> _Plan | None:
        """How to read every running guest of ``known`` in one pass: None if one
        cannot be read here, or a file of its cannot be opened."""
        files, reads, shape, others = [], [], [], {}
        for name, (number, state) in known.items():
            if number < 0:  # not active: no process to read (paused ones are read)
                others[name] = stats.GuestCounters(name, state, None, (), None, None, None)
                continue
            try:
                found = self._files_of((name, number))
            except NotLocal:
                return None
            kind, cpu = found.cpu
            statm = found.statm if memory and kind != "stat" else None
            vcpu_files = found.schedstat if vcpus else ()
            fds = [self.open.fd(path) for path in (cpu, *vcpu_files)]
            resident = -1 if statm is None else self.open.fd(statm)
            if resident is None or None in fds:
                return None
            held = cast("list[int]", fds)
            files.append(((name, number), found))
            reads.append((kind, held[0], resident, tuple(held[1:])))
            shape.append((name, state, len(vcpu_files)))
        return _Plan(
            known, vcpus, memory, stats.Shape.of(shape), tuple(files), tuple(reads), others,
            (NO_TAIL,) * len(files),
        )  # fmt: skip

    def _let_go(self, known: Mapping[str, tuple[int, int]]) -> None:
        """Close the files of guests no longer running as they were (stopped, or
        started again: a new ID)."""
        live = {(name, number) for name, (number, _) in known.items() if number >= 0}
        for key in set(self._files) - live:
            self.open.close(self._files.pop(key).paths())
            self._memory.pop(key, None)
        self._known = known

    def _files_of(self, key: tuple[str, int]) -> Files:
        """Where a running guest's counters are, found at its first sample;
        NotLocal when they cannot be read here."""
        files = self._files.get(key)
        if files is None:
            status = status_of(key[0], self.status_dir)
            files = files_of(threads_from_status(status, self.proc), self.proc, self.cgroups)
            self._files[key] = files
        return files

    def _read_cpu(
        self, key: tuple[str, int], state: int, vcpus: bool, _memory_due: bool
    ) -> stats.GuestCounters:
        """One running guest's CPU counters from the kernel (nothing reads memory)."""
        files = self._files_of(key)
        return read_counters(key[0], state, files, vcpus=vcpus, rss=False, read=self.open.read)

    def _read(
        self, key: tuple[str, int], state: int, vcpus: bool, memory_due: bool
    ) -> stats.GuestCounters:
        """One running guest's counters from the kernel, memory too."""
        files = self._files_of(key)
        memory = self._memory.get(key)
        if memory is None or memory_due:
            memory = self._memory[key] = self._memory_of(key[0], files, memory)
        return read_counters(
            key[0], state, files, vcpus=vcpus, tail=memory.tail, read=self.open.read
        )

    def _memory_of(self, name: str, files: Files, known: _Memory | None) -> _Memory:
        """A guest's memory figures, read anew: its cgroup's, and the balloon as
        libvirt's status records it (read again only when libvirt rewrote it)."""
        path = f"{self._status_prefix}{name}.xml"  # not a Path: made per guest per read
        balloon = read_balloon(path, known.balloon if known else None)
        return _memory(read_memory(files, self.open.read), balloon, known.view if known else None)

    def _ask_guests(self, conn: libvirt.virConnect, now: float, nowait: int, every: float) -> None:
        """The guest's own view of its memory (its balloon driver's statistics),
        which only QEMU has: asked of libvirt ``every`` seconds (:data:`BALLOON_S`,
        or each sample for the memory tuner) for the guests
        whose balloon has a statistics period, every ten times that for one whose
        driver never reported (none in the guest, or not loaded yet)."""
        due = []
        for key, memory in self._memory.items():
            balloon = memory.balloon[1] if memory.balloon else None
            if balloon is None or balloon.period <= 0:
                continue
            wait = every if memory.view is None or memory.view.reported else 10 * BALLOON_S
            if memory.view is None or now - memory.view.asked_at >= wait:
                due.append(key)
        if not due:
            return
        doms = {}
        for key in due:
            with contextlib.suppress(libvirt.libvirtError):  # gone: its event follows
                doms[key] = conn.lookupByID(key[1])
        if not doms:
            return
        answers = conn.domainListGetStats(
            list(doms.values()), libvirt.VIR_DOMAIN_STATS_BALLOON, nowait
        )
        by_name = {dom.name(): record for dom, record in answers}
        for key in doms:
            record = by_name.get(key[0], {})
            reported = int(record.get("balloon.last-update", 0)) > 0
            known = self._memory[key].view
            if not reported and known is not None and known.reported:
                # No answer this time (QEMU busy: the call does not wait for it):
                # what the driver last said stands, asked again next time.
                continue
            view = _View(stats.guest_view(record), reported, now)
            held = self._memory[key]
            self._memory[key] = _memory(held.cgroup, held.balloon, view)


@dataclass(frozen=True, slots=True, eq=False)
class _Plan:
    """How a sampler reads every running guest in one pass (see
    :meth:`LocalSampler._packed`), made again when a guest starts or stops, or
    what is read changes: the shape of the samples it makes, each guest's
    files, and the descriptors read."""

    known: Mapping[str, tuple[int, int]]
    vcpus: bool
    memory: bool
    shape: stats.Shape
    files: tuple[tuple[tuple[str, int], Files], ...]
    reads: tuple[Plan, ...]
    others: Mapping[str, stats.GuestCounters]
    no_tails: tuple[tuple[object, ...], ...]


@dataclass(frozen=True, slots=True)
class _View:
    """The guest's own view of its memory, as its balloon driver last told."""

    figures: stats.GuestView
    reported: bool
    asked_at: float


@dataclass(frozen=True, slots=True)
class _Memory:
    """What a sampler keeps of one running guest's memory between readings."""

    cgroup: Memory | None
    balloon: tuple[int, Balloon] | None
    view: _View | None
    #: The three as the guest's counters end (:func:`memory_tail`), made once.
    tail: tuple[object, ...]


def _memory(
    cgroup: Memory | None, balloon: tuple[int, Balloon] | None, view: _View | None
) -> _Memory:
    """What is kept of a guest's memory, its counters' tail made from it at once."""
    figures = view.figures if view else stats.NO_VIEW
    tail = memory_tail(cgroup, balloon[1] if balloon else None, figures)
    return _Memory(cgroup, balloon, view, tail)


def _through_libvirt(
    conn: libvirt.virConnect, names: list[str], groups: Collection[str], nowait: int
) -> dict[str, stats.GuestCounters]:
    """The guests the kernel could not be read for, through libvirt as before:
    each on its own (one gone since the listing is left out, and one libvirt
    gives no record of: it stopped, or migrated away, in between)."""
    flags = stats.flags_of(groups)
    found = {}
    for name in names:
        try:
            records = conn.domainListGetStats([conn.lookupByName(name)], flags, nowait)
        except libvirt.libvirtError as exc:
            if exc.get_error_code() != libvirt.VIR_ERR_NO_DOMAIN:
                raise
            continue
        for _, record in records[:1]:
            found[name] = stats.parse_domain_stats(name, record)
    return found
