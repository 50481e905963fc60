"""The libvirt adapter: one connection, its quirks, and the tuning calls.

Blocking: every method calls libvirt synchronously. The daemon runs them in a
worker thread, never on its event loop.

Quirks are learned per connection, from what the driver answers, not from
the URI's name (virtinst's lesson: one capability table, no version checks
scattered about):

- The test driver pins only running guests and only with flags 0 (it refuses
  ``AFFECT_CONFIG``), and refuses every flagged scheduler call: the first such
  refusal marks the capability off for the connection.
- The test driver reports 8 host CPUs from ``getCPUMap`` whatever its node
  XML says, and reads back an empty pinning for a CPU beyond those 8: the
  CPUs the host has for pinning are those both the map and the node info count.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Collection, Iterator
from contextlib import contextmanager
from typing import Any

import libvirt

from virtpolicy.errors import (
    ConnectionLostError,
    GuestNotFoundError,
    HypervisorError,
    UnsupportedError,
)
from virtpolicy.hypervisor import memtune, migration, mirror, stats
from virtpolicy.hypervisor.capabilities import host_topology, scheduler_of
from virtpolicy.hypervisor.codes import (
    ACTIVE,
    CONNECTION,
    STATES,
    UNSUPPORTED,
    cpumap,
    cpus_of,
    message,
    numa_params,
    numatune_of,
    refused_flags,
)
from virtpolicy.hypervisor.definition import cpu_topology, with_cpu_topology
from virtpolicy.hypervisor.events import EventWatch, GuestCallback
from virtpolicy.hypervisor.flags import CONFIG, LIVE, Capabilities, call_flags
from virtpolicy.hypervisor.localstats import LocalSampler, local_status_dir
from virtpolicy.hypervisor.native import GuestInfo, NodeInfo, Tuning, cap_params
from virtpolicy.policy.model import GuestPolicy

log = logging.getLogger(__name__)

KEEPALIVE_S = 15
INACTIVE = libvirt.VIR_DOMAIN_XML_INACTIVE


# libvirt prints every error to stderr by default; we report them ourselves.
libvirt.registerErrorHandler(lambda _ctx, _err: None, None)


def versions(uri: str) -> str:
    """What answers at ``uri``, read-only: "libvirt 9.0.0, QEMU 7.2.0" (for
    ``virtpolicy doctor``); ConnectionLostError when nothing does."""
    try:
        conn = libvirt.openReadOnly(uri)
    except libvirt.libvirtError as exc:
        raise ConnectionLostError(f"{uri}: cannot connect: {message(exc)}") from exc
    try:
        lib, hypervisor, driver = conn.getLibVersion(), conn.getVersion(), conn.getType()
    finally:
        conn.close()
    return f"libvirt {_dotted(lib)}, {driver} {_dotted(hypervisor)}"


def _dotted(number: int) -> str:
    return f"{number // 1_000_000}.{number // 1000 % 1000}.{number % 1000}"


class LibvirtConnection:
    """One libvirt connection and the tuning operations virtpolicy needs."""

    def __init__(self, uri: str, *, kernel_sampling: bool = True) -> None:
        self.uri = uri
        self.caps = Capabilities()
        self._kernel_sampling = kernel_sampling
        self._local: LocalSampler | None = None
        self._conn: Any = None
        self._host: NodeInfo | None = None
        #: Domain handles from the latest listing or lookup: a pass reads each
        #: guest with several calls, and a lookup is a round trip of its own.
        self._handles: dict[str, Any] = {}

    # -- connection ---------------------------------------------------------

    def open(self) -> None:
        """Connect (read-write). Raises ConnectionLostError if libvirtd is away."""
        try:
            self._conn = libvirt.open(self.uri)
        except libvirt.libvirtError as exc:
            raise ConnectionLostError(f"{self.uri}: cannot connect: {message(exc)}") from exc
        # A keepalive every 15 s, not libvirt's default 5 s: a restarted libvirtd
        # closes the socket and is noticed at once; this is for a hung one (dead
        # after 3 missed), and an idle daemon then wakes libvirtd 4 times a minute.
        with contextlib.suppress(libvirt.libvirtError):  # drivers without keepalive
            self._conn.setKeepAlive(KEEPALIVE_S, 3)
        self.caps = Capabilities()
        self._host = None
        self._handles = {}
        # A local QEMU driver's guests are sampled from the kernel (localstats.py).
        status_dir = local_status_dir(self.uri) if self._kernel_sampling else None
        if self._local is not None:
            self._local.open.close()
        self._local = LocalSampler(status_dir) if status_dir is not None else None

    def close(self) -> None:
        if self._local is not None:
            self._local.open.close()  # the counter files it held open
        if self._conn is not None:
            try:
                self._conn.close()
            except libvirt.libvirtError:
                log.debug("closing %s failed; it was already gone", self.uri)
            self._conn = None

    def is_alive(self) -> bool:
        try:
            return self._conn is not None and bool(self._conn.isAlive())
        except libvirt.libvirtError:
            return False

    @property
    def conn(self) -> Any:
        """The raw virConnect, for the event glue in this package only."""
        if self._conn is None:
            raise ConnectionLostError(f"{self.uri}: not connected")
        return self._conn

    def node(self) -> NodeInfo:
        """The host's CPU count and scheduler flavour (probed once per connection)."""
        if self._host is None:
            with self.translating(None, "read host info"):
                info = self.conn.getInfo()
                driver = str(self.conn.getType()).lower()
                ncpus, _map, _online = self.conn.getCPUMap(0)
            # The test driver's CPU map is 8 wide whatever its node XML says, and
            # it pins only within the map: a CPU must be in both to be pinned on.
            cpus = min(int(ncpus), int(info[2])) or int(ncpus)
            topology = dict(
                zip(("nodes", "sockets", "cores", "threads"), map(int, info[4:8]), strict=True)
            )
            with self.translating(None, "read the host's capabilities"):
                layout = host_topology(self.conn.getCapabilities(), topology, self.uri)
            self._host = NodeInfo(cpus, scheduler_of(driver, self.uri), driver, topology, layout)
            self.caps.driver = driver
        return self._host

    def sample(self, groups: Collection[str] = stats.ALL_GROUPS) -> stats.Sample:
        """Every guest's state and CPU time; per-vCPU and memory counters and the
        host CPUs' times only for the ``groups`` ("vcpu", "balloon", "host")
        given. A local QEMU driver's from the kernel, others' in one bulk call."""
        collect = self._local.collect if self._local is not None else stats.collect
        with self.translating(None, "collect statistics"):
            if self.caps.stats_nowait is not False:
                try:
                    sample = collect(self.conn, self.node().cpus, groups, stats.NOWAIT)
                    self.caps.stats_nowait = True
                    return sample
                except libvirt.libvirtError as exc:
                    if self.caps.stats_nowait or not refused_flags(exc):
                        raise
                    self.caps.stats_nowait = False  # the test driver knows no NOWAIT
            return collect(self.conn, self.node().cpus, groups, 0)

    def watch(self, on_guest: GuestCallback, on_close: Callable[[str], None]) -> None:
        """Lifecycle and tunable events of the current connection (see events.py)."""

        def seen(guest: str, what: str) -> None:
            if what in ("defined", "undefined"):  # a new definition: look its handle up
                self._handles.pop(guest, None)
            on_guest(guest, what)

        local = self._local
        with self.translating(None, "register event callbacks"):
            EventWatch(
                self.conn, seen, on_close, local.domains.event if local is not None else None
            ).register()
        if local is not None:
            local.domains.watched = True

    # -- guests ---------------------------------------------------------------

    def guests(self) -> list[GuestInfo]:
        """Every domain on the connection, running or defined: three listings for all
        of them and one call per guest (its state and vCPUs), not three per guest."""
        with self.translating(None, "list guests"):
            conn = self.conn
            persistent = {
                d.UUIDString()
                for d in conn.listAllDomains(libvirt.VIR_CONNECT_LIST_DOMAINS_PERSISTENT)
            }
            autostart = {
                d.UUIDString()
                for d in conn.listAllDomains(libvirt.VIR_CONNECT_LIST_DOMAINS_AUTOSTART)
            }
            doms = conn.listAllDomains(0)
            self._handles = {dom.name(): dom for dom in doms}
            found = []
            for dom in doms:
                try:
                    found.append(self._info(dom, persistent, autostart))
                except libvirt.libvirtError as exc:
                    # Undefined since the listing (a transient guest that
                    # stopped): it is not there, which its event says too.
                    if exc.get_error_code() != libvirt.VIR_ERR_NO_DOMAIN:
                        raise
                    self._handles.pop(dom.name(), None)
            return found

    def guest(self, name: str) -> GuestInfo:
        with self.translating(name, "look up"):
            dom = self.conn.lookupByName(name)
            self._handles[name] = dom
            return self._info(dom)

    def actual(
        self,
        name: str,
        running: bool | None = None,
        *,
        definition: bool = False,
        memory: bool = False,
        persistent: bool = True,
    ) -> Tuning:
        """The tuning in effect: live for a running guest, else the definition;
        with ``definition``, the <numatune> and <cpu><topology> of the definition
        (of a transient guest, live); with ``memory``, the soft limit and the
        balloon's free page reporting."""
        if running is None:  # a caller that knows says so, saving a lookup
            running = self.guest(name).running
        with self.translating(name, "read tuning"):
            dom = self._dom(name)
            numatune = shape = None
            # The definition (of a transient guest, live), read once for both.
            xml = dom.XMLDesc(INACTIVE if persistent else 0) if definition or memory else ""
            if definition:
                numatune = numatune_of(dom.numaParameters(CONFIG if persistent else LIVE))
                shape = cpu_topology(xml)
            memtune_, reporting = memtune.read(dom, xml, running=running) if memory else ({}, None)
            flags = LIVE if running else CONFIG
            if not running and self.caps.pin_config is False:
                return Tuning(
                    numatune=numatune,
                    topology=shape,
                    memtune=memtune_,
                    free_page_reporting=reporting,
                )
            pins = call_flags(dom.vcpuPinInfo, flags)
            emulator = call_flags(dom.emulatorPinInfo, flags)
            sched = self.caps.sched(dom, flags)
        return Tuning(
            vcpupin={i: cpus_of(m) for i, m in enumerate(pins)},
            emulatorpin=cpus_of(emulator) if emulator is not None else None,
            sched={k: int(v) for k, v in sched.items()},
            numatune=numatune,
            topology=shape,
            memtune=memtune_,
            free_page_reporting=reporting,
        )

    # -- changing tuning ------------------------------------------------------

    def apply(
        self, name: str, tuning: Tuning, *, running: bool, persistent: bool = True
    ) -> list[str]:
        """Write ``tuning`` to the definition (a transient guest has none) and, if
        running, the live guest.

        Returns the problems that did not stop the rest (unsupported features);
        raises HypervisorError for real failures.
        """
        problems: list[str] = []
        ncpus = self.node().cpus
        where = {"running": running, "persistent": persistent}
        with self.translating(name, "apply tuning"):
            dom = self._dom(name)
            found = [
                self.caps.pin_vcpu(dom, vcpu, cpumap(cpus, ncpus), **where)
                for vcpu, cpus in sorted(tuning.vcpupin.items())
            ]
            if tuning.emulatorpin is not None:
                found.append(
                    self.caps.pin_emulator(dom, cpumap(tuning.emulatorpin, ncpus), **where)
                )
            if tuning.sched:
                found.append(self.caps.set_sched(dom, tuning.sched, **where))
            problems += dict.fromkeys(p for p in found if p)  # each said once, in order
            if tuning.numatune is not None:  # the definition's: it binds at start
                dom.setNumaParameters(numa_params(tuning.numatune), CONFIG if persistent else LIVE)
            if tuning.topology is not None and persistent:  # seen from the next start
                xml = dom.XMLDesc(INACTIVE | libvirt.VIR_DOMAIN_XML_SECURE)
                self.conn.defineXML(with_cpu_topology(xml, tuning.topology))
            problems += memtune.write(
                self.conn, dom, dict(tuning.memtune), tuning.free_page_reporting, **where
            )
        return problems

    # -- live changes of tuners -----------------------------------------

    def place(self, name: str, vcpu: int, cpus: frozenset[int]) -> None:
        """Pin one vCPU of a running guest, live only: a dynamic placement."""
        with self.translating(name, "pin a vCPU"):
            dom = self.conn.lookupByName(name)
            dom.pinVcpuFlags(vcpu, cpumap(cpus, self.node().cpus), LIVE)

    def set_cap(self, name: str, cap: int | None) -> None:
        """Cap a running guest (None: lift the cap), live only."""
        params = cap_params(cap, self.node().scheduler)
        if not params:
            raise UnsupportedError(f"{name}: cap: not supported by the {self.node().driver} driver")
        with self.translating(name, "set a cap"):
            self.conn.lookupByName(name).setSchedulerParametersFlags(params, LIVE)

    def set_balloon(self, name: str, kib: int) -> None:
        """Set a running guest's balloon, live only (``virsh setmem --live``)."""
        with self.translating(name, "set the balloon"):
            self.conn.lookupByName(name).setMemoryFlags(kib, LIVE)

    # -- lifecycle ----------------------------------------------------------------

    def start(self, name: str) -> bool:
        """Start a defined guest (``virsh start``); False if it was running already.

        One call for both, because drivers disagree on the error code of
        "already running" (the test driver says internal error).
        """
        with self.translating(name, "start"):
            dom = self.conn.lookupByName(name)
            if dom.isActive():
                return False
            dom.create()
            return True

    def shutdown(self, name: str) -> None:
        """Ask the guest to shut down (ACPI); returns at once."""
        with self.translating(name, "shutdown"):
            self.conn.lookupByName(name).shutdown()

    def destroy(self, name: str) -> None:
        """Stop the guest at once (``virsh destroy``)."""
        with self.translating(name, "destroy"):
            self.conn.lookupByName(name).destroy()

    def managedsave(self, name: str) -> None:
        """Save the guest's state and stop it; the next start resumes it."""
        with self.translating(name, "managedsave"):
            self.conn.lookupByName(name).managedSave(0)

    def migrate(self, name: str, uri: str, stream: str | None) -> None:
        params, flags = migration.parameters(stream)
        with self.translating(name, "migrate"):
            self.conn.lookupByName(name).migrateToURI3(uri, params, flags)

    def agent_ping(self, name: str, timeout_s: int = 5) -> None:
        """Ask the QEMU guest agent for ``guest-ping``; raises if it does not answer."""
        import libvirt_qemu  # noqa: PLC0415  (only for the agent condition)

        with self.translating(name, "guest agent ping"):
            dom = self.conn.lookupByName(name)
            libvirt_qemu.qemuAgentCommand(dom, '{"execute": "guest-ping"}', timeout_s, 0)

    # -- the policy mirrored into the domain ------------------------------------

    def read_mirror(self, name: str, *, persistent: bool = True) -> tuple[int, GuestPolicy] | None:
        """The (revision, policy) last mirrored into ``name``'s definition (a
        transient guest's live state), if any."""
        with self.translating(name, "read metadata"):
            return mirror.read(self._dom(name), CONFIG if persistent else LIVE)

    def write_mirror(
        self,
        name: str,
        revision: int,
        policy: GuestPolicy | None,
        *,
        running: bool,
        persistent: bool = True,
    ) -> None:
        """Mirror ``policy`` (None: remove the mirror) into the domain's <metadata>."""
        flags = (CONFIG if persistent else 0) | (LIVE if running else 0)
        with self.translating(name, "write metadata"):
            mirror.write(self._dom(name), revision, policy, flags)

    # -- plumbing ----------------------------------------------------------------

    def _info(
        self, dom: Any, persistent: set[str] | None = None, autostart: set[str] | None = None
    ) -> GuestInfo:
        state, _max_mem, _mem, vcpus, _cpu_time = dom.info()
        text = STATES.get(state, "unknown")
        uuid = dom.UUIDString()
        return GuestInfo(
            name=dom.name(),
            uuid=uuid,
            running=text in ACTIVE,
            state=text,
            vcpus=int(vcpus),
            persistent=uuid in persistent if persistent is not None else bool(dom.isPersistent()),
            autostart=uuid in autostart if autostart is not None else bool(dom.autostart()),
        )

    def _dom(self, name: str) -> Any:
        """The guest's domain handle: the one last listed or looked up, else a lookup."""
        dom = self._handles.get(name)
        return dom if dom is not None else self.conn.lookupByName(name)

    @contextmanager
    def translating(self, guest: str | None, what: str) -> Iterator[None]:
        """Turn libvirt errors inside the block into virtpolicy's, keeping the cause."""
        try:
            yield
        except libvirt.libvirtError as exc:
            raise self._translate(exc, guest, what) from exc

    def _translate(self, exc: Any, guest: str | None, what: str) -> HypervisorError:
        code = exc.get_error_code()
        subject = f"{guest}: " if guest else ""
        if code == libvirt.VIR_ERR_NO_DOMAIN:
            if guest is not None:  # a handle of a guest undefined (and maybe defined anew)
                self._handles.pop(guest, None)
            return GuestNotFoundError(f"{guest}: no such guest on {self.uri}")
        if code in UNSUPPORTED:
            return UnsupportedError(f"{subject}{what}: not supported: {message(exc)}")
        if code in CONNECTION and not self.is_alive():
            return ConnectionLostError(f"{self.uri}: connection lost during {what}: {message(exc)}")
        return HypervisorError(f"{subject}{what}: {message(exc)}")
