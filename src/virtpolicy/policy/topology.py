"""A host's CPU topology as plain data: NUMA nodes, sockets, cores, SMT siblings.

Read by ``hypervisor/`` from libvirt's capabilities (or derived from a test
driver's node info, :meth:`Topology.regular`), and used by the placer
(:mod:`virtpolicy.policy.placement`). No libvirt here.

A *core* is identified by ``(socket, core)`` as the host reports them; its
*threads* are the host CPUs that share it (its SMT siblings). A host CPU
belongs to exactly one NUMA node and one core.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from virtpolicy.policy.cpuset import format_cpuset


@dataclass(frozen=True, slots=True, order=True)
class HostCpu:
    """One host CPU (a hardware thread): where it sits."""

    id: int
    node: int
    socket: int
    core: int
    #: The last-level cache group it shares, where the host reports one.
    llc: int | None = None

    @property
    def core_key(self) -> tuple[int, int]:
        return (self.socket, self.core)


class Topology:
    """Every host CPU with its place, and each NUMA node's memory (KiB).

    ``source`` says how it was learnt, for ``virtpolicy host``: "capabilities",
    or "derived from node info" (the test driver)."""

    def __init__(
        self,
        cpus: Iterable[HostCpu],
        memory: Mapping[int, int] | None = None,
        source: str = "capabilities",
        isolated: frozenset[int] = frozenset(),
        distances: Mapping[tuple[int, int], int] | None = None,
    ) -> None:
        self.cpus = tuple(sorted(cpus))
        #: (node, node) -> the distance the host reports (10 within a node).
        self.distances = dict(distances or {})
        #: The host CPUs the kernel keeps isolated (``isolcpus``), shown alongside.
        self.isolated = isolated
        if len({c.id for c in self.cpus}) != len(self.cpus):
            raise ValueError("a host CPU appears twice in the topology")
        self.memory = dict(memory or {})
        self.source = source
        self._by_id = {c.id: c for c in self.cpus}
        cores: dict[tuple[int, int], list[int]] = {}
        for c in self.cpus:
            cores.setdefault(c.core_key, []).append(c.id)
        self._cores = {k: tuple(sorted(v)) for k, v in sorted(cores.items())}
        by_node: dict[int, set[int]] = {}
        for c in self.cpus:
            by_node.setdefault(c.node, set()).add(c.id)
        self._node_cpus = {n: frozenset(v) for n, v in by_node.items()}
        self._core_node = {k: self._by_id[v[0]].node for k, v in self._cores.items()}
        self._nodes = tuple(sorted({c.node for c in self.cpus} | set(self.memory)))
        self._smt = max((len(t) for t in self._cores.values()), default=1)
        node_cores: dict[int, list[tuple[int, int]]] = {}
        for k, node in self._core_node.items():
            node_cores.setdefault(node, []).append(k)
        self._node_cores = {n: tuple(v) for n, v in node_cores.items()}

    def __repr__(self) -> str:
        return f"Topology({len(self.cpus)} CPUs, nodes {list(self.nodes)}, SMT {self.smt})"

    # -- questions ------------------------------------------------------------------

    @property
    def nodes(self) -> tuple[int, ...]:
        """The NUMA nodes, those without CPUs included (from ``memory``)."""
        return self._nodes

    @property
    def smt(self) -> int:
        """Threads per core (the most any core has)."""
        return self._smt

    def cpu(self, cpu_id: int) -> HostCpu:
        return self._by_id[cpu_id]

    def cores(self) -> Mapping[tuple[int, int], tuple[int, ...]]:
        """Each core's threads (host CPU ids), cores in (socket, core) order."""
        return self._cores

    def node_of_core(self, core: tuple[int, int]) -> int:
        return self._core_node[core]

    def cpus_of(self, nodes: Iterable[int]) -> frozenset[int]:
        return frozenset().union(*(self._node_cpus.get(n, frozenset()) for n in nodes))

    def node_cores(self, node: int) -> tuple[tuple[int, int], ...]:
        """One node's cores, in (socket, core) order."""
        return self._node_cores.get(node, ())

    def node_cpus(self, node: int) -> frozenset[int]:
        """One node's host CPUs (none for a node with memory only)."""
        return self._node_cpus.get(node, frozenset())

    def siblings(self, cpu_id: int) -> tuple[int, ...]:
        """The threads of ``cpu_id``'s core, itself included."""
        return self._cores[self._by_id[cpu_id].core_key]

    def to_dict(self) -> dict[str, Any]:
        """A summary for ``virtpolicy host`` and ``GET /v1/host``: per node its CPUs,
        cores and memory; threads per core; the kernel's isolated CPUs. Made once:
        the daemon's host description (asked for by every ``status``) shows it."""
        return self._summary

    @functools.cached_property
    def _summary(self) -> dict[str, Any]:
        nodes: dict[str, Any] = {}
        for n in self.nodes:
            cpus = self.cpus_of([n])
            cores = {c.core_key for c in self.cpus if c.node == n}
            nodes[str(n)] = {
                "cpus": format_cpuset(cpus) if cpus else "",
                "cores": len(cores),
                "memory_kib": self.memory.get(n),
                "distances": {str(m): d for (a, m), d in sorted(self.distances.items()) if a == n},
            }
        return {
            "source": self.source,
            "cpus": len(self.cpus),
            "smt": self.smt,
            "nodes": nodes,
            "isolated": format_cpuset(self.isolated) if self.isolated else "",
        }

    # -- making one -----------------------------------------------------------------

    @classmethod
    def regular(cls, nodes: int, sockets: int, cores: int, threads: int) -> Topology:
        """A regular host from libvirt's node info (per node: ``sockets`` sockets of
        ``cores`` cores of ``threads`` threads), numbered the way Linux usually
        does: all first threads of every core, then all second threads. What the
        test driver's node files give, which report no topology of their own."""
        if min(nodes, sockets, cores, threads) < 1:
            raise ValueError("nodes, sockets, cores and threads must each be at least 1")
        per_thread = nodes * sockets * cores
        found = []
        for thread in range(threads):
            for index in range(per_thread):
                node, rest = divmod(index, sockets * cores)
                socket = node * sockets + rest // cores
                found.append(
                    HostCpu(thread * per_thread + index, node, socket, rest % cores, llc=socket)
                )
        return cls(tuple(found), source="derived from node info")

    def with_isolated(self, isolated: frozenset[int]) -> Topology:
        return Topology(self.cpus, self.memory, self.source, isolated, self.distances)

    def spread(self, nodes: Iterable[int]) -> int:
        """How far apart ``nodes`` are: the sum of their pairwise distances (where
        the host reports none: 0 within a node, 1 between two)."""
        chosen = sorted(nodes)
        return sum(
            self.distances.get((a, b), 1) for i, a in enumerate(chosen) for b in chosen[i + 1 :]
        )
