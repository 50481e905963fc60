"""The placer: host CPUs for every guest, from intent and the host's topology.

A pure function (:func:`place`) from the host's topology, the CPUs set aside
for the host, every guest's request (in the order they arrive) and where the
guests sit now, to a placement. Deterministic: the same input gives the same
answer. Rules:

- A *dedicated* guest's vCPUs get host CPUs of their own; no other guest's
  vCPUs (dedicated or shared) may run there. *Shared* guests float over the
  shared pool: every host CPU neither reserved nor dedicated.
- Guests that already sit somewhere keep their CPUs when those are still
  theirs to have: a new guest never moves a placed dedicated guest.
- Threads: ``prefer`` fills a core's sibling threads before taking another
  core; ``isolate`` gives each vCPU a whole core and keeps its siblings idle;
  ``require`` needs SMT and puts vCPU pairs on sibling pairs.
- Fewest NUMA nodes first (exactly ``nodes`` when asked for), then fewest
  last-level cache groups, then the nearest nodes (by the host's NUMA
  distances), then the fewest half-used cores left behind.
- A guest that cannot be placed is refused with what it needs and what each
  node has: ``web: needs 4 dedicated cores with isolated siblings in 1 NUMA
  node; node 0 has 2 free, node 1 has 3 (batch holds 4 of them)``.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from virtpolicy.policy import capacity
from virtpolicy.policy.cpuset import format_cpuset
from virtpolicy.policy.model import GuestPolicy
from virtpolicy.policy.topology import Topology

Mode = Literal["shared", "dedicated"]
Threads = Literal["prefer", "isolate", "require"]
Emulator = Literal["share", "isolate"]
Core = tuple[int, int]
#: What one call of :func:`place` works out once and uses again: counts of free
#: units per state of the owners, refusals, the pool near a set of nodes.
_Memo = dict[tuple[object, ...], Any]

#: How a refused placement's reason starts among a guest's problems.
PLACEMENT_REFUSED = "placement refused: "


@dataclass(frozen=True, slots=True)
class Request:
    """What one guest asks for: its vCPU count and its policy's intent."""

    guest: str
    vcpus: int
    placement: Mode = "shared"
    threads: Threads = "prefer"
    emulator: Emulator = "share"
    #: Within this many NUMA nodes (None: as few as will do).
    nodes: int | None = None


def request_for(guest: str, vcpus: int, policy: GuestPolicy | None) -> Request:
    """What a guest with ``vcpus`` vCPUs asks for under ``policy`` (none: shared)."""
    if policy is None:
        return Request(guest, vcpus)
    cpu = policy.cpu
    return Request(guest, vcpus, cpu.placement, cpu.threads, cpu.emulator, policy.numa.nodes)


@dataclass(frozen=True, slots=True)
class Placed:
    """Where one guest sits: each vCPU's host CPUs, the emulator's, its nodes, and
    the host CPUs it holds alone (empty for a shared guest)."""

    vcpupin: tuple[frozenset[int], ...]
    emulatorpin: frozenset[int]
    nodes: tuple[int, ...]
    dedicated: frozenset[int] = frozenset()

    def to_dict(self) -> dict[str, object]:
        return {
            "vcpupin": {str(v): format_cpuset(c) for v, c in enumerate(self.vcpupin)},
            "emulatorpin": format_cpuset(self.emulatorpin),
        }


@dataclass
class Placement:
    """Every guest placed, and every guest refused with the reason."""

    guests: dict[str, Placed] = field(default_factory=dict)
    #: One line each, under 200 characters: what it needs, the best nodes.
    refused: dict[str, str] = field(default_factory=dict)
    #: The full account of each refusal: every node, everyone holding it.
    details: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, object]:
        return {
            "guests": {g: p.to_dict() for g, p in sorted(self.guests.items())},
            "refused": dict(sorted(self.refused.items())),
            "details": dict(sorted(self.details.items())),
        }


def place(
    topology: Topology,
    reserved: frozenset[int],
    requests: Sequence[Request],
    current: Mapping[str, Placed] | None = None,
) -> Placement:
    """Place ``requests`` (dedicated first, guests that keep their place first of
    all, then in the order given); see the module docstring."""
    current = current or {}
    result = Placement()
    owner: dict[int, str] = {}  # host CPU -> the dedicated guest holding it
    memo: _Memo = {}  # what refusals count, while ``owner`` stays the same
    usable = frozenset(c.id for c in topology.cpus) - reserved
    nodes = [n for n in topology.nodes if topology.node_cpus(n) & usable]
    dedicated = [r for r in requests if r.placement == "dedicated"]
    for r in dedicated:  # one by one: two guests cannot both keep one CPU
        now = current.get(r.guest)
        if now is not None and _keeps(r, now, usable, owner):
            result.guests[r.guest] = now
            owner.update(dict.fromkeys(now.dedicated, r.guest))
    for r in dedicated:
        if r.guest in result.guests:
            continue
        found = _dedicated(topology, usable, owner, r, nodes, memo)
        if isinstance(found, tuple):
            result.refused[r.guest], result.details[r.guest] = found
            continue
        result.guests[r.guest] = found
        owner.update(dict.fromkeys(found.dedicated, r.guest))
    _float(topology, usable - set(owner), requests, result, memo)
    return result


def _float(
    topology: Topology,
    pool: frozenset[int],
    requests: Sequence[Request],
    result: Placement,
    memo: _Memo,
) -> None:
    """Over the shared pool: dedicated guests' emulators (near them when they
    can) and shared guests."""
    for r in requests:  # their emulators float over the pool (nearby when they can)
        got = result.guests.get(r.guest)
        if got is not None and r.placement == "dedicated" and r.emulator == "share":
            if ("near", got.nodes) not in memo:
                memo["near", got.nodes] = pool & topology.cpus_of(got.nodes)
            emulator = memo["near", got.nodes] or pool or got.dedicated
            result.guests[r.guest] = Placed(got.vcpupin, emulator, got.nodes, got.dedicated)
    for r in requests:
        if r.placement == "shared":
            if ("shared", r.vcpus, r.nodes) not in memo:  # the same for every such guest
                memo["shared", r.vcpus, r.nodes] = _shared(topology, pool, r)
            found = memo["shared", r.vcpus, r.nodes]
            if isinstance(found, str):
                result.refused[r.guest] = result.details[r.guest] = f"{r.guest}: {found}"
            else:
                result.guests[r.guest] = found


# -- dedicated ------------------------------------------------------------------------


def _keeps(r: Request, now: Placed, usable: frozenset[int], owner: dict[int, str]) -> bool:
    """Whether ``r`` keeps its current place: dedicated, as many vCPUs, every CPU
    still usable and nobody else's."""
    return (
        bool(now.dedicated)
        and len(now.vcpupin) == r.vcpus
        and now.dedicated <= usable
        and not any(c in owner for c in now.dedicated)
    )


def _dedicated(
    topology: Topology,
    usable: frozenset[int],
    owner: dict[int, str],
    r: Request,
    nodes: list[int],
    memo: _Memo,
) -> Placed | tuple[str, str]:
    """Where ``r`` goes, or why not: (one line, the full account)."""
    if r.threads == "require" and topology.smt < 2:
        no_smt = f"{r.guest}: cpu.threads require needs SMT; this host has one thread per core"
        return no_smt, no_smt
    # A request like one refused before, while the owners are the same, is refused.
    key = ("refused", r.vcpus, r.threads, r.emulator, r.nodes, len(owner))
    if key in memo:
        return f"{r.guest}: {memo[key][0]}", f"{r.guest}: {memo[key][1]}"
    found = _search(topology, usable, owner, r, nodes, memo)
    free = len(usable) - len(owner)
    if found is not None and free - len(found.dedicated) < 1:
        # Every place of it holds as many CPUs, and none leaves a shared one.
        reason = (
            f"needs {len(found.dedicated)} dedicated host CPUs of the {free} free,"
            " which would leave none shared (for emulators and shared guests)"
        )
        memo[key] = (reason, reason)
    elif found is not None:
        return found
    else:
        memo[key] = capacity.why(topology, usable, owner, r, nodes, memo)
    return f"{r.guest}: {memo[key][0]}", f"{r.guest}: {memo[key][1]}"


def _search(
    topology: Topology,
    usable: frozenset[int],
    owner: dict[int, str],
    r: Request,
    nodes: list[int],
    memo: _Memo,
) -> Placed | None:
    """The best place for ``r`` in the fewest nodes that hold it, or None."""
    counts = [r.nodes] if r.nodes is not None else list(range(1, len(nodes) + 1))
    if len(usable) - len(owner) < r.vcpus:  # not even counting threads
        return None
    free, _ = capacity.counted(topology, usable, owner, r.threads, memo)
    per_unit = 2 if r.threads == "require" else 1  # vCPUs a free unit can hold
    # prefer counts threads: its isolated emulator needs one more
    need = r.vcpus + (r.threads == "prefer" and r.emulator == "isolate")
    for k in counts:
        best: tuple[tuple[int, int, int, tuple[int, ...]], Placed] | None = None
        for chosen in itertools.combinations(nodes, k):
            if per_unit * sum(free.get(n, 0) for n in chosen) < need:
                continue  # cannot hold it: no need to look closer
            found = _pick(topology, usable, owner, r, chosen)
            if found is not None and (best is None or found[0] < best[0]):
                best = found
        if best is not None:
            return best[1]
    return None


def _pick(
    topology: Topology,
    usable: frozenset[int],
    owner: dict[int, str],
    r: Request,
    nodes: tuple[int, ...],
) -> tuple[tuple[int, int, int, tuple[int, ...]], Placed] | None:
    """The best way to place ``r`` within ``nodes`` (with its score: LLC groups
    used, how far apart the nodes are, half-used cores left, nodes), or None."""
    cores = topology.cores()
    free = {
        core: tuple(t for t in cores[core] if t in usable and t not in owner)
        for n in nodes
        for core in topology.node_cores(n)
    }
    whole = [c for c, t in free.items() if t and len(t) == len(cores[c])]
    partial = [c for c, t in free.items() if t and len(t) < len(cores[c])]
    llc = {c: topology.cpu(cores[c][0]).llc or 0 for c in free}
    whole.sort(key=lambda c: (llc[c], c))
    partial.sort(key=lambda c: (llc[c], c))
    vcpus: list[int] = []
    held: set[int] = set()
    if r.threads in ("isolate", "require"):
        per = 1 if r.threads == "isolate" else 2  # require: a vCPU pair per core
        fit = [c for c in whole if len(cores[c]) >= per]
        need = -(-r.vcpus // per)
        if len(fit) < need:
            return None
        for core in fit[:need]:
            held.update(cores[core])
            vcpus += list(cores[core][:per])
        vcpus = vcpus[: r.vcpus]
    else:  # prefer: whole cores filled thread by thread, a half-free core for the rest
        threads = [t for c in whole for t in free[c]]
        full = r.vcpus - r.vcpus % topology.smt if topology.smt > 1 else r.vcpus
        vcpus = threads[:full]
        rest = r.vcpus - len(vcpus)
        spare = [t for c in partial for t in free[c]] + threads[full:]
        if len(spare) < rest:
            return None
        vcpus += spare[:rest]
        held.update(vcpus)
    emulator: frozenset[int] = frozenset()
    if r.emulator == "isolate":
        own_idle = sorted(t for t in held if t not in vcpus) if r.threads != "isolate" else []
        others = [
            t for c in partial + whole for t in free[c] if t not in held
        ]  # a half-used core's thread first
        extra = (own_idle + others)[:1]
        if not extra:
            return None
        emulator = frozenset(extra)
        held.update(extra)
    left_half = sum(
        1 for c, t in free.items() if 0 < len([x for x in t if x not in held]) < len(cores[c])
    )
    groups = len({llc[topology.cpu(t).core_key] for t in held})
    score = (groups, topology.spread(nodes), left_half, nodes)
    pins = tuple(frozenset([t]) for t in vcpus)
    return score, Placed(pins, emulator, nodes, frozenset(held))


# -- shared ---------------------------------------------------------------------------


def _shared(topology: Topology, pool: frozenset[int], r: Request) -> Placed | str:
    """Where a shared guest floats, or why it cannot (after its name)."""
    nodes = [n for n in topology.nodes if topology.node_cpus(n) & pool]
    if not nodes:
        return "no shared host CPU is left: every one is reserved or dedicated"
    if r.nodes is not None:
        if len(nodes) < r.nodes:
            return f"needs shared host CPUs in {r.nodes} NUMA nodes; {len(nodes)} have any"
        ranked = sorted(nodes, key=lambda n: (-len(topology.node_cpus(n) & pool), n))
        nodes = sorted(ranked[: r.nodes])
    cpus = pool & topology.cpus_of(nodes)
    return Placed(tuple(cpus for _ in range(r.vcpus)), cpus, tuple(nodes))


def placed_from_pins(
    topology: Topology,
    r: Request,
    vcpupin: Mapping[int, frozenset[int]],
    emulatorpin: frozenset[int] | None,
) -> Placed | None:
    """Where a dedicated guest sits, read back from its pins (a daemon that
    restarts keeps it there), or None where they are not a placement of ``r``:
    one host CPU per vCPU, none twice, each vCPU on a core of its own for
    ``isolate``, vCPU pairs on sibling pairs for ``require``, the emulator on
    one more CPU for ``emulator: isolate``, within ``nodes`` when asked."""
    pins = [vcpupin.get(v, frozenset()) for v in range(r.vcpus)]
    known = {c.id for c in topology.cpus}
    if any(len(p) != 1 or not p <= known for p in pins):
        return None
    cpus = [next(iter(p)) for p in pins]
    held = set(cpus)
    if len(held) != len(cpus):
        return None
    if r.threads in ("isolate", "require"):
        per = 1 if r.threads == "isolate" else 2
        cores = [topology.cpu(c).core_key for c in cpus]
        if any(cores.count(k) > per for k in cores):
            return None
        held = {t for k in cores for t in topology.cores()[k]}
    emulator = emulatorpin or frozenset()
    if r.emulator == "isolate":
        # On a CPU of no vCPU: a thread of its own core (not for isolate, whose
        # siblings stay idle), or one more.
        taken = held if r.threads == "isolate" else set(cpus)
        if len(emulator) != 1 or emulator & taken or not emulator <= known:
            return None
        held |= emulator
    nodes = tuple(sorted({topology.cpu(c).node for c in held}))
    if r.nodes is not None and len(nodes) > r.nodes:
        return None
    return Placed(tuple(pins), emulator, nodes, frozenset(held))


def cpu_uses(
    topology: Topology, placement: Placement, reserved: frozenset[int] = frozenset()
) -> list[dict[str, object]]:
    """Each host CPU, by node and core, with what sits there: a dedicated guest's
    vCPU or emulator (or its sibling kept idle), else the shared guests that may
    run there, else ``reserved`` or ``free``."""
    uses: dict[int, list[str]] = {c.id: [] for c in topology.cpus}
    floating: dict[int, list[str]] = {c.id: [] for c in topology.cpus}
    for guest, placed in sorted(placement.guests.items()):
        if placed.dedicated:
            for v, cpus in enumerate(placed.vcpupin):
                for cpu in cpus:
                    uses[cpu].append(f"{guest} vCPU {v}")
            for cpu in placed.emulatorpin & placed.dedicated:
                uses[cpu].append(f"{guest} emulator")
            for cpu in placed.dedicated:
                if not uses[cpu]:
                    uses[cpu].append(f"{guest} (kept idle)")
        else:
            for cpu in frozenset().union(*placed.vcpupin):
                floating[cpu].append(guest)
    ordered = sorted(topology.cpus, key=lambda c: (c.node, min(topology.siblings(c.id)), c.id))
    rows: list[dict[str, object]] = []
    for c in ordered:
        use = uses[c.id] or (
            [f"shared: {', '.join(floating[c.id])}"]
            if floating[c.id]
            else ["reserved" if c.id in reserved else "free"]
        )
        core = format_cpuset(topology.siblings(c.id))
        rows.append({"node": c.node, "core": core, "cpu": c.id, "use": "; ".join(use)})
    return rows
