"""libvirt's error codes and CPU maps, as the adapter reads them."""

from __future__ import annotations

from typing import Any

import libvirt

from virtpolicy.policy.cpuset import format_cpuset, parse_cpuset

UNSUPPORTED = {libvirt.VIR_ERR_NO_SUPPORT, libvirt.VIR_ERR_ARGUMENT_UNSUPPORTED}
CONNECTION = {
    libvirt.VIR_ERR_SYSTEM_ERROR,
    libvirt.VIR_ERR_INTERNAL_ERROR,
    libvirt.VIR_ERR_NO_CONNECT,
    libvirt.VIR_ERR_INVALID_CONN,
    libvirt.VIR_ERR_RPC,
}

#: libvirt's domain states, as virsh names them.
STATES = {
    libvirt.VIR_DOMAIN_NOSTATE: "nostate",
    libvirt.VIR_DOMAIN_RUNNING: "running",
    libvirt.VIR_DOMAIN_BLOCKED: "blocked",
    libvirt.VIR_DOMAIN_PAUSED: "paused",
    libvirt.VIR_DOMAIN_SHUTDOWN: "shutdown",
    libvirt.VIR_DOMAIN_SHUTOFF: "shut off",
    libvirt.VIR_DOMAIN_CRASHED: "crashed",
    libvirt.VIR_DOMAIN_PMSUSPENDED: "pmsuspended",
}
#: The states of a guest that runs (its vCPUs exist).
ACTIVE = {"running", "blocked", "paused", "pmsuspended"}


def refused_flags(exc: Any) -> bool:
    """The driver refused the flags themselves (the test driver's answer)."""
    code = exc.get_error_code()
    return code in UNSUPPORTED or (
        code == libvirt.VIR_ERR_INVALID_ARG and "unsupported flags" in message(exc)
    )


def message(exc: Any) -> str:
    return str(exc.get_error_message() or exc)


def cpus_of(cpumap: Any) -> frozenset[int]:
    return frozenset(i for i, on in enumerate(cpumap) if on)


def cpumap(cpus: frozenset[int], ncpus: int) -> tuple[bool, ...]:
    return tuple(i in cpus for i in range(max(ncpus, max(cpus) + 1)))


#: libvirt's ``numa_mode`` values, in order (``virDomainNumatuneMemMode``).
NUMA_MODES = ("strict", "preferred", "interleave", "restrictive")


def numatune_of(params: dict[str, Any]) -> tuple[str, frozenset[int]] | None:
    """A domain's <numatune> from its NUMA parameters; None where it has none."""
    nodeset = params.get("numa_nodeset") or ""
    if not nodeset:
        return None
    mode = params.get("numa_mode", 0)
    name = NUMA_MODES[mode] if 0 <= mode < len(NUMA_MODES) else f"mode {mode}"
    return name, parse_cpuset(nodeset)


def numa_params(numatune: tuple[str, frozenset[int]]) -> dict[str, Any]:
    mode, nodes = numatune
    return {"numa_mode": NUMA_MODES.index(mode), "numa_nodeset": format_cpuset(nodes)}
