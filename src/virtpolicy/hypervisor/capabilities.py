"""A host's topology from libvirt's capabilities XML (``virConnectGetCapabilities``,
``virsh capabilities``), and the CPUs the kernel keeps isolated.

Pure parsing, no libvirt call: the same code reads this host's capabilities and
a file given with ``--capabilities`` to plan for another host.

- NUMA cells (``<topology><cells><cell>``): each host CPU's node, socket and
  core, and each node's memory; a cell without CPUs is a node all the same.
- Cores are told apart by their SMT siblings (``siblings``), which libvirt
  reports per CPU: ``core_id`` repeats across dies and clusters.
- The last-level cache: the ``<cache><bank>`` of the highest level that
  lists the CPU.
"""

from __future__ import annotations

import logging
import os
import xml.etree.ElementTree as ET
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import urlsplit

from virtpolicy.errors import PolicyError
from virtpolicy.hypervisor.native import Scheduler
from virtpolicy.policy.cpuset import parse_cpuset
from virtpolicy.policy.numbers import ascii_int
from virtpolicy.policy.topology import HostCpu, Topology

log = logging.getLogger(__name__)

ISOLATED = Path("/sys/devices/system/cpu/isolated")
_UNITS = {
    "b": 1 / 1024,
    "bytes": 1 / 1024,
    "kib": 1,
    "k": 1,
    "mib": 1024,
    "m": 1024,
    "gib": 1 << 20,
}


def topology_from_capabilities(xml: str, where: str = "capabilities") -> Topology | None:
    """The topology the document describes; None when it has no NUMA cell with
    CPUs (libvirt's test driver reports none for a node file of its own).
    PolicyError, one line naming ``where`` and the element, when it is not a
    capabilities document."""
    try:
        root = ET.fromstring(xml)
    except ET.ParseError as exc:
        raise PolicyError(f"{where}: not XML: {exc}") from None
    if root.tag != "capabilities" or root.find("host") is None:
        raise PolicyError(f"{where}: not a libvirt capabilities document (no <capabilities><host>)")
    host = root.find("host")
    assert host is not None
    llc = _last_level_cache(host, where)
    cpus: list[HostCpu] = []
    memory: dict[int, int] = {}
    distances: dict[tuple[int, int], int] = {}
    for cell in host.findall("topology/cells/cell"):
        node = _number(cell, "id", where)
        for sibling in cell.findall("distances/sibling"):
            other = _number(sibling, "id", where)
            distances[node, other] = _number(sibling, "value", where)
        mem = cell.find("memory")
        if mem is not None and mem.text:
            factor = _UNITS.get((mem.get("unit") or "KiB").lower())
            amount = ascii_int(mem.text.strip(), max_digits=20)
            if factor is None or amount is None:
                raise PolicyError(f"{where}: cell {node}: memory {mem.text!r} is not a size")
            memory[node] = int(amount * factor)
        for cpu in cell.findall("cpus/cpu"):
            cpu_id = _number(cpu, "id", where)
            siblings = cpu.get("siblings")
            try:
                threads = parse_cpuset(siblings) if siblings else frozenset({cpu_id})
            except PolicyError as exc:
                raise PolicyError(f"{where}: cpu {cpu_id}: siblings: {exc}") from None
            cpus.append(
                HostCpu(
                    cpu_id,
                    node,
                    _number(cpu, "socket_id", where, default=node),
                    min(threads | {cpu_id}),
                    llc.get(cpu_id),
                )
            )
    if not cpus:
        return None
    try:
        return Topology(cpus, memory, source="capabilities", distances=distances)
    except ValueError as exc:
        raise PolicyError(f"{where}: {exc}") from None


def host_topology(caps: str, node_info: Mapping[str, int], where: str) -> Topology:
    """The topology from a host's own capabilities or, where they have no cells
    (the test driver) or cannot be read, derived from its node info (nodes,
    sockets, cores, threads), which ``Topology.source`` then says; with the
    kernel's isolated CPUs when ``where`` (the URI) is this machine."""
    try:
        found = topology_from_capabilities(caps, where)
    except PolicyError as exc:
        log.warning("%s; the topology is derived from the node info", exc)
        found = None
    if found is None:
        counts = [
            max(1, int(node_info.get(k, 1))) for k in ("nodes", "sockets", "cores", "threads")
        ]
        found = Topology.regular(*counts)
    # The kernel's isolated CPUs are this machine's: only for a local connection.
    return found.with_isolated(isolated_cpus()) if urlsplit(where).hostname is None else found


def domain_vcpus(xml: str, where: str = "domain") -> tuple[str, int]:
    """A domain XML's name and vCPU count (``<vcpu current=...>`` if set: the
    vCPUs it runs with). PolicyError, one line naming ``where``, otherwise."""
    try:
        root = ET.fromstring(xml)
    except ET.ParseError as exc:
        raise PolicyError(f"{where}: not XML: {exc}") from None
    name = (root.findtext("name") or "").strip()
    vcpu = root.find("vcpu")
    if root.tag != "domain" or not name or vcpu is None:
        raise PolicyError(
            f"{where}: not a libvirt domain document (no <domain> with <name>, <vcpu>)"
        )
    text = vcpu.get("current") or (vcpu.text or "").strip()
    count = ascii_int(text, max_digits=5)
    if not count:
        raise PolicyError(f"{where}: <vcpu> {text!r} is not a vCPU count")
    return name, count


def isolated_cpus(path: Path = ISOLATED) -> frozenset[int]:
    """The host CPUs the kernel keeps away from its scheduler (``isolcpus``); empty
    where the file is missing or unreadable."""
    try:
        text = path.read_text(encoding="ascii").strip()
        return parse_cpuset(text) if text else frozenset()
    except (OSError, UnicodeDecodeError, PolicyError):
        return frozenset()


def _last_level_cache(element: ET.Element, where: str) -> dict[int, int]:
    """cpu -> its last-level cache bank, from the capabilities' <host> ``element``."""
    found: dict[int, tuple[int, int]] = {}  # cpu -> (level, bank id)
    for bank in element.findall("cache/bank"):
        level = _number(bank, "level", where)
        bank_id = _number(bank, "id", where)
        try:
            members = parse_cpuset(bank.get("cpus") or "")
        except PolicyError as exc:
            raise PolicyError(f"{where}: cache bank {bank_id}: cpus: {exc}") from None
        for cpu in members:
            if cpu not in found or found[cpu][0] < level:
                found[cpu] = (level, bank_id)
    return {cpu: bank for cpu, (_, bank) in found.items()}


def _number(element: ET.Element, name: str, where: str, default: int | None = None) -> int:
    text = element.get(name)
    if text is None and default is not None:
        return default
    value = ascii_int(text, max_digits=9) if text is not None else None
    if value is None:
        raise PolicyError(f"{where}: <{element.tag}> {name}={text!r} is not a number")
    return value


def scheduler_of(driver: str, uri: str) -> Scheduler:
    """How the driver expresses CPU weight and cap on the host at ``uri``."""
    if driver in ("qemu", "lxc"):
        # Only a local host's cgroup flavour can be read; remote hosts are
        # assumed to run cgroup v2, today's default.
        local = "//" not in uri or uri.split("//", 1)[1].startswith("/")
        if local and (
            os.path.exists("/sys/fs/cgroup/cpu/cpu.shares")
            or os.path.exists("/sys/fs/cgroup/cpu,cpuacct/cpu.shares")
        ):
            return "cgroup1"
        return "cgroup2"
    if driver == "xen":
        return "xen"
    return "none"
