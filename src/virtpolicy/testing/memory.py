"""A hypervisor in memory: :class:`MemoryHypervisor` implements the engine's Host.

Guests are plain records; what the engine writes (pins, scheduler values,
the mirrored policy) is kept and read back as written, and starting or
stopping a guest emits the lifecycle event libvirt would, on the event loop
given at construction. ``fail`` makes the next calls about a guest raise,
and :meth:`MemoryHypervisor.drop` loses the connection as a libvirtd restart does.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass, field

from virtpolicy.errors import ConnectionLostError, GuestNotFoundError, HypervisorError
from virtpolicy.hypervisor.base import GuestEvent
from virtpolicy.hypervisor.native import GuestInfo, NodeInfo, Scheduler, Tuning, cap_params
from virtpolicy.hypervisor.stats import ALL_GROUPS, Sample
from virtpolicy.policy.model import GuestPolicy
from virtpolicy.policy.topology import Topology


@dataclass
class MemoryGuest:
    """One guest: its state and the tuning written to it."""

    name: str
    vcpus: int = 2
    running: bool = False
    vcpupin: dict[int, frozenset[int]] = field(default_factory=dict)
    emulatorpin: frozenset[int] | None = None
    sched: dict[str, int] = field(default_factory=dict)
    numatune: tuple[str, frozenset[int]] | None = None
    topology: tuple[int, int, int] | None = None  # <cpu><topology>
    memtune: dict[str, int] = field(default_factory=dict)  # the soft limit, KiB
    free_page_reporting: bool = False
    balloon_kib: int | None = None  # as last set
    mirror: tuple[int, GuestPolicy] | None = None
    agent: bool = True  # does its guest agent answer?

    def info(self) -> GuestInfo:
        return GuestInfo(
            name=self.name,
            uuid=f"00000000-0000-0000-0000-{abs(hash(self.name)) % 10**12:012d}",
            running=self.running,
            state="running" if self.running else "shut off",
            vcpus=self.vcpus,
            persistent=True,
        )


class MemoryHypervisor:
    """A :class:`~virtpolicy.hypervisor.base.Hypervisor` in memory; thread-safe."""

    def __init__(
        self,
        guests: list[MemoryGuest] | None = None,
        *,
        cpus: int = 4,
        scheduler: Scheduler = "cgroup2",
        loop: asyncio.AbstractEventLoop | None = None,
        layout: Topology | None = None,
    ) -> None:
        self.uri = "memory:///"
        self.cpus = len(layout.cpus) if layout is not None else cpus
        #: The host's CPU topology (default: one node, one thread per core).
        self.layout = layout or Topology.regular(1, 1, cpus, 1)
        self.scheduler: Scheduler = scheduler
        self.guests_by_name = {g.name: g for g in guests or ()}
        #: guest -> the error its next calls raise (a broken guest).
        self.fail: dict[str, Exception] = {}
        #: Called with (method, guest) before each call, in the caller's thread.
        self.before: Callable[[str, str | None], None] = lambda _m, _g: None
        self.opened = 0
        #: (guest, uri, stream) of each migration away, in order.
        self.migrated: list[tuple[str, str, str | None]] = []
        self._loop = loop
        self._lock = threading.RLock()
        self._connected = False
        self._on_guest: GuestEvent | None = None
        self._on_close: Callable[[str], None] | None = None

    # -- the connection -----------------------------------------------------------

    def open(self) -> None:
        with self._lock:
            self._connected = True
            self.opened += 1

    def close(self) -> None:
        with self._lock:
            self._connected = False

    def watch(self, on_guest: GuestEvent, on_close: Callable[[str], None]) -> None:
        self._check("watch", None)
        self._on_guest, self._on_close = on_guest, on_close

    def drop(self) -> None:
        """Lose the connection (libvirtd restarted): calls fail until the next open."""
        with self._lock:
            self._connected = False
        if self._on_close is not None:
            self._emit(self._on_close, "end of file")

    # -- reading ----------------------------------------------------------------

    def node(self) -> NodeInfo:
        self._check("node", None)
        topology = {"nodes": 1, "sockets": 1, "cores": self.cpus, "threads": 1}
        return NodeInfo(self.cpus, self.scheduler, "memory", topology, self.layout)

    def guests(self) -> list[GuestInfo]:
        self._check("guests", None)
        with self._lock:
            return [g.info() for g in self.guests_by_name.values()]

    def guest(self, name: str) -> GuestInfo:
        return self._guest("guest", name).info()

    def actual(
        self,
        name: str,
        running: bool | None = None,
        *,
        definition: bool = False,
        memory: bool = False,
        persistent: bool = True,
    ) -> Tuning:
        g = self._guest("actual", name)
        with self._lock:
            return Tuning(
                dict(g.vcpupin),
                g.emulatorpin,
                dict(g.sched),
                g.numatune if definition else None,
                g.topology if definition else None,
                dict(g.memtune) if memory else {},
                g.free_page_reporting if memory else None,
            )

    def read_mirror(self, name: str, *, persistent: bool = True) -> tuple[int, GuestPolicy] | None:
        return self._guest("read_mirror", name).mirror

    def sample(self, groups: Collection[str] = ALL_GROUPS) -> Sample:
        self._check("sample", None)
        return Sample(time.monotonic(), time.time(), {}, tuple((0, 0) for _ in range(self.cpus)))

    # -- writing ----------------------------------------------------------------

    def apply(
        self, name: str, tuning: Tuning, *, running: bool, persistent: bool = True
    ) -> list[str]:
        g = self._guest("apply", name)
        with self._lock:
            g.vcpupin.update(tuning.vcpupin)
            if tuning.emulatorpin is not None:
                g.emulatorpin = tuning.emulatorpin
            g.sched.update(tuning.sched)
            if tuning.numatune is not None:
                g.numatune = tuning.numatune
            if tuning.topology is not None:
                g.topology = tuning.topology
            g.memtune.update(tuning.memtune)
            if tuning.free_page_reporting is not None:
                g.free_page_reporting = tuning.free_page_reporting
        return []

    def place(self, name: str, vcpu: int, cpus: frozenset[int]) -> None:
        g = self._guest("place", name)
        with self._lock:
            g.vcpupin[vcpu] = cpus

    def set_cap(self, name: str, cap: int | None) -> None:
        g = self._guest("set_cap", name)
        with self._lock:
            g.sched.update(cap_params(cap, self.scheduler))

    def set_balloon(self, name: str, kib: int) -> None:
        g = self._guest("set_balloon", name)
        with self._lock:
            g.balloon_kib = kib

    def write_mirror(
        self,
        name: str,
        revision: int,
        policy: GuestPolicy | None,
        *,
        running: bool,
        persistent: bool = True,
    ) -> None:
        g = self._guest("write_mirror", name)
        g.mirror = (revision, policy) if policy is not None else None

    # -- lifecycle --------------------------------------------------------------

    def start(self, name: str) -> bool:
        g = self._guest("start", name)
        with self._lock:
            if g.running:
                return False
            g.running = True
        self._event(name, "started")
        return True

    def shutdown(self, name: str) -> None:
        self.destroy(name)

    def destroy(self, name: str) -> None:
        g = self._guest("destroy", name)
        with self._lock:
            g.running = False
        self._event(name, "stopped")

    def managedsave(self, name: str) -> None:
        self.destroy(name)

    def define(self, guest: MemoryGuest) -> None:
        """A guest defined here (``virsh define``): libvirt's DEFINED event."""
        self._check("define", guest.name)
        with self._lock:
            self.guests_by_name[guest.name] = guest
        self._event(guest.name, "defined")

    def migrate_out(self, name: str) -> None:
        """The guest leaves by live migration: libvirt's STOPPED/MIGRATED here."""
        g = self._guest("migrate_out", name)
        with self._lock:
            g.running = False
        self._event(name, "migrated out")

    def migrate_in(self, name: str) -> None:
        """The guest arrives by live migration, with the tuning it had elsewhere:
        STARTED/MIGRATED (paused), then RESUMED/MIGRATED once it is done."""
        g = self._guest("migrate_in", name)
        with self._lock:
            g.running = True
        self._event(name, "migrating in")
        self._event(name, "migrated in")

    def migrate(self, name: str, uri: str, stream: str | None) -> None:
        """The guest leaves for ``uri`` (recorded in :attr:`migrated`), undefined here;
        as with libvirt, no UNDEFINED event follows its STOPPED/MIGRATED."""
        g = self._guest("migrate", name)
        if not g.running:
            raise HypervisorError(f"{name}: migrate: domain is not running")
        self.migrate_out(name)
        with self._lock:
            del self.guests_by_name[name]
            self.migrated.append((name, uri, stream))

    def agent_ping(self, name: str, timeout_s: int = 5) -> None:
        g = self._guest("agent_ping", name)
        if not (g.running and g.agent):
            raise HypervisorError(f"{name}: guest agent ping: not responding")

    # -- plumbing ---------------------------------------------------------------

    def _check(self, method: str, guest: str | None) -> None:
        self.before(method, guest)
        if not self._connected:
            raise ConnectionLostError(f"{self.uri}: not connected")
        if guest is not None and guest in self.fail:
            raise self.fail[guest]

    def _guest(self, method: str, name: str) -> MemoryGuest:
        self._check(method, name)
        with self._lock:
            found = self.guests_by_name.get(name)
        if found is None:
            raise GuestNotFoundError(f"{name}: no such guest on {self.uri}")
        return found

    def _event(self, name: str, what: str) -> None:
        if self._on_guest is not None:
            self._emit(self._on_guest, name, what)

    def _emit(self, callback: Callable[..., None], *args: str) -> None:
        # libvirt calls back on the loop's thread; so does this.
        if self._loop is not None:
            self._loop.call_soon_threadsafe(callback, *args)
        else:
            callback(*args)
