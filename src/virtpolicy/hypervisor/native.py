"""From a policy to the native tuning values of one driver on one host.

Pure: no libvirt here, so the translation is unit-tested without a host.

- weight (1-10000, 100 normal): cgroup v1 ``cpu_shares`` = weight x 1024 / 100
  clamped to 2-262144; cgroup v2 ``cpu_shares`` = weight (libvirt writes it to
  ``cpu.weight`` as is); Xen credit ``weight`` = weight x 256 / 100.
- cap (percent of one host CPU): QEMU/KVM ``global_period`` 100000 us and
  ``global_quota`` = cap x 1000; Xen ``cap`` = cap.

A field the policy leaves unset is not managed, unless an earlier policy set
it (the one mirrored in the domain): then it goes back to the driver's default,
so that removing a cap really lifts it.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Literal

from virtpolicy.policy.cpuset import cpus_in, format_cpuset
from virtpolicy.policy.model import AUTO, GuestPolicy
from virtpolicy.policy.placement import PLACEMENT_REFUSED, Placed
from virtpolicy.policy.topology import Topology

#: libvirt's name of the soft limit, and its "no limit" (KiB).
SOFT_LIMIT = "soft_limit"
UNLIMITED_KIB = 9007199254740991

#: How a driver and host express CPU weight and cap.
Scheduler = Literal["cgroup1", "cgroup2", "xen", "none"]

GLOBAL_PERIOD_US = 100_000
_UNLIMITED_QUOTA = -1
_DEFAULT_SHARES = {"cgroup1": 1024, "cgroup2": 100}
_XEN_DEFAULT_WEIGHT = 256


@dataclass(frozen=True, slots=True)
class NodeInfo:
    """What tuning depends on: the host's CPUs and its scheduler flavour."""

    cpus: int
    scheduler: Scheduler
    driver: str = ""
    #: As libvirt's node info gives it: NUMA nodes, sockets per node, cores per
    #: socket, threads per core.
    topology: Mapping[str, int] = field(default_factory=dict)
    #: Every host CPU's node, socket and core (from the capabilities, or derived
    #: from the node info where the driver reports no cells).
    layout: Topology | None = None

    def describe(self) -> dict[str, object]:
        """For ``GET /v1/host``: the driver, CPUs, scheduler and topology."""
        return {
            "driver": self.driver,
            "cpus": self.cpus,
            "scheduler": self.scheduler,
            "topology": self.layout.to_dict() if self.layout is not None else None,
        }


@dataclass(frozen=True, slots=True)
class GuestInfo:
    """A domain as libvirt sees it now."""

    name: str
    uuid: str
    running: bool
    state: str
    vcpus: int
    persistent: bool
    #: libvirt's own autostart flag (``virsh autostart``).
    autostart: bool = False


FieldKind = Literal[
    "vcpupin", "emulatorpin", "sched", "numatune", "topology", "memtune", "memballoon"
]


@dataclass(frozen=True, slots=True, order=True)
class Field:
    """One field of a guest's tuning that libvirt holds: a vCPU's pinning
    (``vcpu``), the emulator's, a scheduler parameter (``name``), the memory's
    NUMA binding, the CPU topology the guest sees, a memory parameter
    (``memtune``, ``name``: ``soft_limit``) or the balloon's free page reporting."""

    kind: FieldKind
    vcpu: int = -1
    name: str = ""

    def label(self) -> str:
        """The field as it is shown (API, events, logs, the page): ``vcpupin.0``,
        ``emulatorpin``, ``cpu_shares``, ``numatune``, ``topology``."""
        if self.kind == "vcpupin":
            return f"vcpupin.{self.vcpu}"
        if self.kind == "memballoon":
            return "free_page_reporting"
        return self.name if self.kind in ("sched", "memtune") else self.kind

    def shown(self, value: object) -> Value:
        """A value of this field as it is shown: a cpuset in libvirt's syntax; a
        soft limit in KiB, or unlimited; free page reporting on or off."""
        if self.kind == "memballoon" and isinstance(value, bool):
            return "on" if value else "off"
        if self.kind == "memtune" and value == UNLIMITED_KIB:
            return "unlimited"
        if value is None or isinstance(value, int | str):
            return value
        if self.kind in ("vcpupin", "emulatorpin") and isinstance(value, frozenset):
            return _cpuset_text(value)
        if self.kind == "numatune" and isinstance(value, tuple):
            return _numatune_text(value)
        if self.kind == "topology" and isinstance(value, tuple):
            return _shape_text(value)
        return str(value)


#: Fields that differ: (actual, desired), typed.
Changes = dict[Field, tuple[object, object]]


@dataclass(frozen=True, slots=True)
class Tuning:
    """CPU tuning of one guest in native terms; absent keys are not managed."""

    vcpupin: Mapping[int, frozenset[int]] = field(default_factory=dict)
    emulatorpin: frozenset[int] | None = None
    sched: Mapping[str, int] = field(default_factory=dict)
    #: <numatune>: the memory mode and host nodes, in the definition.
    numatune: tuple[str, frozenset[int]] | None = None
    #: <cpu><topology> in the definition: (sockets, cores, threads).
    topology: tuple[int, int, int] | None = None
    #: <memtune>: the soft limit in KiB (``soft_limit``).
    memtune: Mapping[str, int] = field(default_factory=dict)
    #: <memballoon freePageReporting> in the definition.
    free_page_reporting: bool | None = None

    def to_dict(self) -> dict[str, object]:
        """The API's form: ``{"vcpupin": {"0": "2-3"}, "emulatorpin": "0-1" or None,
        "sched": {"cpu_shares": 2048}, "numatune": "strict 0" or None}``."""
        return {
            "vcpupin": {str(v): _cpuset_text(c) for v, c in sorted(self.vcpupin.items())},
            "emulatorpin": None if self.emulatorpin is None else _cpuset_text(self.emulatorpin),
            "sched": dict(sorted(self.sched.items())),
            "numatune": self._numatune_text(),
            "topology": _shape_text(self.topology),
            "memtune": dict(sorted(self.memtune.items())),
            "free_page_reporting": self.free_page_reporting,
        }

    def _numatune_text(self) -> str | None:
        return None if self.numatune is None else _numatune_text(self.numatune)

    def fields(self) -> dict[Field, object]:
        """Every managed field with its value, typed (a cpuset is a frozenset)."""
        out: dict[Field, object] = {Field("vcpupin", vcpu=v): c for v, c in self.vcpupin.items()}
        if self.emulatorpin is not None:
            out[Field("emulatorpin")] = self.emulatorpin
        out.update((Field("sched", name=k), v) for k, v in self.sched.items())
        if self.numatune is not None:
            out[Field("numatune")] = self.numatune
        if self.topology is not None:
            out[Field("topology")] = self.topology
        out.update((Field("memtune", name=k), v) for k, v in self.memtune.items())
        if self.free_page_reporting is not None:
            out[Field("memballoon")] = self.free_page_reporting
        return out

    def only(self, wanted: Iterable[Field]) -> Tuning:
        """This tuning's values of the ``wanted`` fields only."""
        keep = set(wanted)
        return Tuning(
            vcpupin={v: c for v, c in self.vcpupin.items() if Field("vcpupin", vcpu=v) in keep},
            emulatorpin=self.emulatorpin if Field("emulatorpin") in keep else None,
            sched={k: v for k, v in self.sched.items() if Field("sched", name=k) in keep},
            numatune=self.numatune if Field("numatune") in keep else None,
            topology=self.topology if Field("topology") in keep else None,
            memtune={k: v for k, v in self.memtune.items() if Field("memtune", name=k) in keep},
            free_page_reporting=(self.free_page_reporting if Field("memballoon") in keep else None),
        )


@dataclass(frozen=True, slots=True)
class Desired:
    """The tuning to enforce, and what of the policy cannot be enforced here."""

    tuning: Tuning
    problems: tuple[str, ...] = ()


def weight_params(weight: int, scheduler: Scheduler) -> dict[str, int]:
    """Native scheduler parameters for a weight."""
    if scheduler == "cgroup1":
        return {"cpu_shares": min(max(weight * 1024 // 100, 2), 262144)}
    if scheduler == "cgroup2":
        return {"cpu_shares": weight}
    if scheduler == "xen":
        return {"weight": min(max(weight * 256 // 100, 1), 65535)}
    return {}


def cap_params(cap: int | None, scheduler: Scheduler) -> dict[str, int]:
    """Native scheduler parameters for a cap (None: uncapped)."""
    if scheduler in ("cgroup1", "cgroup2"):
        quota = _UNLIMITED_QUOTA if cap is None else cap * 1000
        return {"global_period": GLOBAL_PERIOD_US, "global_quota": quota}
    if scheduler == "xen":
        return {"cap": 0 if cap is None else cap}
    return {}


def cap_of(sched: Mapping[str, int], scheduler: Scheduler) -> int | None:
    """The cap, in % of one host CPU, that native parameters mean (None: none)."""
    if scheduler in ("cgroup1", "cgroup2"):
        quota, period = sched.get("global_quota"), sched.get("global_period") or GLOBAL_PERIOD_US
        if quota is None or quota <= 0 or quota >= 2**40:  # -1, or cgroup v1's "max"
            return None
        return round(quota * 100 / period)
    if scheduler == "xen":
        return sched.get("cap") or None
    return None


def desired_tuning(
    policy: GuestPolicy,
    node: NodeInfo,
    vcpus: int,
    previous: GuestPolicy | None = None,
    actual: Tuning | None = None,
    placed: Placed | str | None = None,
) -> Desired:
    """What ``policy`` asks of a guest with ``vcpus`` vCPUs on ``host``.

    With ``cpu.vcpus: auto`` a vCPU's pinning is the tuner's to
    choose: its ``actual`` pinning stands while it is within ``cpu.allowed``
    (default: every host CPU, or the shared pool where the host has one); one
    outside is put back to ``allowed``.

    ``placed`` is where the placer put the guest (None: placement is not in play
    on this host, a reason: the guest could not be placed). A dedicated guest
    gets its CPUs; a shared one floats over the shared pool, save for the pins
    its policy fixes; ``numa.nodes`` binds its memory to the nodes (<numatune>).
    """
    problems: list[str] = []
    if isinstance(placed, str):
        problems.append(PLACEMENT_REFUSED + placed)
        placed = None
    if placed is None and policy.cpu.placement == "dedicated":
        problems.append("cpu.placement: dedicated: not placed yet; nothing is pinned for it")
    vcpupin, emulatorpin = _pinning(policy, node, vcpus, previous, problems, actual, placed)
    sched = _scheduler_params(policy, node, previous, problems)
    numatune = shape = None
    if placed is not None and policy.numa.nodes is not None:
        numatune = (policy.numa.memory or "strict", frozenset(placed.nodes))
    if placed is not None and policy.cpu.topology == "match" and node.layout is not None:
        shape = guest_shape(node.layout, placed)
    memory, before = policy.memory, previous.memory if previous else None
    memtune = {}
    if memory.soft_limit_kib is not None:
        memtune[SOFT_LIMIT] = memory.soft_limit_kib
    elif before is not None and before.soft_limit is not None:
        memtune[SOFT_LIMIT] = UNLIMITED_KIB  # removed from the policy: lifted
    # One bad cpuset shared by several vCPUs is one problem.
    tuning = Tuning(
        vcpupin, emulatorpin, sched, numatune, shape, memtune, memory.free_page_reporting
    )
    return Desired(tuning, tuple(dict.fromkeys(problems)))


def _pinning(
    policy: GuestPolicy,
    node: NodeInfo,
    vcpus: int,
    previous: GuestPolicy | None,
    problems: list[str],
    actual: Tuning | None = None,
    placed: Placed | None = None,
) -> tuple[dict[int, frozenset[int]], frozenset[int] | None]:
    every_cpu = frozenset(range(node.cpus))
    cpu, before = policy.cpu, previous.cpu if previous else None
    if placed is not None and cpu.placement == "dedicated":
        return dict(enumerate(placed.vcpupin)), placed.emulatorpin
    pool = placed.emulatorpin if placed is not None else None  # a shared guest's pool

    def cpus_of(text: str, where: str) -> frozenset[int] | None:
        cpus = cpus_in(text)
        missing = sorted(cpus - every_cpu)
        if not missing:
            return cpus
        problems.append(
            f"{where}: CPU {format_cpuset(missing)} does not exist: "
            f"the host has {node.cpus} CPUs ({format_cpuset(every_cpu)})"
        )
        return None

    problems.extend(
        f"cpu.vcpupin[{vcpu}]: the guest has {vcpus} vCPUs (0-{vcpus - 1})"
        for vcpu in sorted(cpu.vcpupin)
        if vcpu >= vcpus
    )
    vcpupin: dict[int, frozenset[int]] = {}
    if cpu.vcpus == AUTO:
        allowed = cpus_of(cpu.allowed, "cpu.allowed") if cpu.allowed else pool or every_cpu
        for vcpu in range(vcpus):
            now = actual.vcpupin.get(vcpu) if actual else None
            vcpupin[vcpu] = now if allowed and now and now <= allowed else allowed or every_cpu
        vcpus = 0  # placed: nothing more to do per vCPU
    for vcpu in range(vcpus):
        text, where = cpu.vcpupin.get(vcpu), f"cpu.vcpupin[{vcpu}]"
        if text is None and cpu.vcpus is not None:
            text, where = cpu.vcpus, "cpu.vcpus"
        pinned = cpus_of(text, where) if text is not None else None
        if pinned is not None:
            vcpupin[vcpu] = pinned
        elif text is None and pool is not None:
            vcpupin[vcpu] = pool
        elif text is None and before and (vcpu in before.vcpupin or before.vcpus is not None):
            vcpupin[vcpu] = every_cpu  # unpinned again: free to run anywhere
    emulatorpin = None
    if cpu.emulatorpin is not None:
        emulatorpin = cpus_of(cpu.emulatorpin, "cpu.emulatorpin")
    elif pool is not None:
        emulatorpin = pool
    elif before and before.emulatorpin is not None:
        emulatorpin = every_cpu
    return vcpupin, emulatorpin


def _scheduler_params(
    policy: GuestPolicy, node: NodeInfo, previous: GuestPolicy | None, problems: list[str]
) -> dict[str, int]:
    cpu, before = policy.cpu, previous.cpu if previous else None
    if node.scheduler == "none":
        driver = f"the {node.driver} driver" if node.driver else "this driver"
        problems.extend(
            f"cpu.{name}: not supported by {driver}"
            for name in ("weight", "cap")
            if getattr(cpu, name) is not None
        )
        return {}
    sched: dict[str, int] = {}
    if cpu.weight is not None:
        sched.update(weight_params(cpu.weight, node.scheduler))
    elif before and before.weight is not None:
        sched.update(_default_weight(node.scheduler))
    if cpu.cap is not None or (before and before.cap is not None):
        sched.update(cap_params(cpu.cap, node.scheduler))
    return sched


#: A value as shown: a cpuset's text, a number, none.
Value = str | int | None


def drift(desired: Tuning, actual: Tuning) -> Changes:
    """Managed fields whose actual value differs: ``{field: (actual, desired)}``."""
    want, have = desired.fields(), actual.fields()
    return {f: (have.get(f), v) for f, v in sorted(want.items()) if have.get(f) != v}


def shown(changes: Changes) -> dict[str, tuple[Value, Value]]:
    """``changes`` as they are shown: ``{"vcpupin.0": ("0-3", "1")}``."""
    return {f.label(): (f.shown(old), f.shown(new)) for f, (old, new) in changes.items()}


def _default_weight(scheduler: Scheduler) -> dict[str, int]:
    if scheduler == "xen":
        return {"weight": _XEN_DEFAULT_WEIGHT}
    return {"cpu_shares": _DEFAULT_SHARES[scheduler]} if scheduler in _DEFAULT_SHARES else {}


def guest_shape(layout: Topology, placed: Placed) -> tuple[int, int, int]:
    """(sockets, cores, threads) under which a guest sees its vCPUs as they sit:
    a thread per vCPU that shares a host core with the next ones (the same number
    on each core, consecutive vCPUs), a socket per host node (as many vCPUs in
    each); else one socket, one thread per core."""
    cpus = [min(pin) for pin in placed.vcpupin]
    n = len(cpus)
    cores = [layout.cpu(c).core_key for c in cpus]
    runs = [len(list(group)) for _core, group in itertools.groupby(cores)]
    threads = runs[0] if len(set(runs)) == 1 and len(set(cores)) == len(runs) else 1
    nodes = [layout.cpu(c).node for c in cpus]
    per_node = [len(list(group)) for _node, group in itertools.groupby(nodes)]
    sockets = len(per_node) if len(set(per_node)) == 1 and len(set(nodes)) == len(per_node) else 1
    if n % (sockets * threads):
        sockets = 1
    return sockets, n // (sockets * threads), threads


def _shape_text(shape: tuple[int, int, int] | None) -> str | None:
    if shape is None:
        return None
    sockets, cores, threads = shape
    return f"{sockets} sockets, {cores} cores, {threads} threads"


def _numatune_text(numatune: tuple[str, frozenset[int]]) -> str:
    mode, nodes = numatune
    return f"{mode} {_cpuset_text(nodes)}".rstrip()


def _cpuset_text(cpus: frozenset[int]) -> str:
    # A driver can read back an empty pinning (the test driver beyond its map).
    return format_cpuset(cpus) if cpus else ""
