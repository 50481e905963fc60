"""What a host has left for dedicated guests, per NUMA node, and why a request
that does not fit is refused: the one line a refusal shows, and the full
account per node (the placer's, :mod:`virtpolicy.policy.placement`)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from virtpolicy.policy.topology import Topology

if TYPE_CHECKING:
    from virtpolicy.policy.placement import Request, Threads

#: What one placement works out once and uses again (see placement's memo).
_Memo = dict[tuple[object, ...], Any]


#: A refusal's one line stays under this many characters (its guest's name aside).
BRIEF_CHARS = 200


def why(
    topology: Topology,
    usable: frozenset[int],
    owner: dict[int, str],
    r: Request,
    nodes: list[int],
    memo: _Memo,
) -> tuple[str, str]:
    """Why ``r`` cannot be placed (after its name): what it needs, then, in one
    line, the two nodes with the most free and who holds the most of them; in
    the full account, every node and everyone holding it."""
    unit = {
        "isolate": ("core with isolated siblings", "cores with isolated siblings"),
        "require": ("sibling pair", "sibling pairs"),
        "prefer": ("host CPU", "host CPUs"),
    }[r.threads]
    need = r.vcpus if r.threads != "require" else -(-r.vcpus // 2)
    what = unit[0] if need == 1 else unit[1]
    if r.emulator == "isolate":
        what += " (and one for its emulator)"
    within = f" in {r.nodes} NUMA node{'s' if r.nodes != 1 else ''}" if r.nodes else ""
    free, holders = counted(topology, usable, owner, r.threads, memo)
    needs = f"needs {need} dedicated {what}{within}; "
    if not nodes:
        return needs + "no host CPU is free of reservations", needs + "no host CPU is free"

    def every(n: int) -> str:
        held = ", ".join(f"{g} holds {k}" for g, k in sorted(holders.get(n, {}).items()))
        return f"node {n} has {free.get(n, 0)} free" + (f" ({held} of its CPUs)" if held else "")

    def brief(n: int) -> str:
        held = sorted(holders.get(n, {}).items(), key=lambda gk: (-gk[1], gk[0]))
        if not held:
            return f"node {n} has {free.get(n, 0)} free"
        others = len(held) - 1
        more = f" and {others} other{'s' if others != 1 else ''}" if others else ""
        return f"node {n} has {free.get(n, 0)} free (held by {held[0][0][:40]}{more})"

    full = needs + ", ".join(every(n) for n in nodes)
    if len(r.guest) + len(full) < BRIEF_CHARS:  # the whole account fits on the line
        return full, full
    best = sorted(nodes, key=lambda n: (-free.get(n, 0), n))[:2]
    rest = len(nodes) - len(best)
    short = needs + ", ".join(brief(n) for n in best)
    if rest:
        short += f"; and {rest} more node{'s' if rest != 1 else ''}"
    return short, full


def counted(
    topology: Topology,
    usable: frozenset[int],
    owner: dict[int, str],
    threads_policy: Threads,
    memo: _Memo,
) -> tuple[dict[int, int], dict[int, dict[str, int]]]:
    """:func:`counts`, once per state of ``owner`` (which only grows during one
    placement) and thread policy: what prunes nodes and what refusals say."""
    key = ("counts", len(owner), threads_policy)
    if key not in memo:
        memo[key] = counts(topology, usable, owner, threads_policy)
    counted: tuple[dict[int, int], dict[int, dict[str, int]]] = memo[key]
    return counted


def counts(
    topology: Topology, usable: frozenset[int], owner: dict[int, str], threads_policy: Threads
) -> tuple[dict[int, int], dict[int, dict[str, int]]]:
    """Per node: the free units for ``threads_policy`` (threads; whole cores for
    isolate; whole cores with siblings for require), and how many of its CPUs
    each dedicated guest holds."""
    free: dict[int, int] = {}
    for core, threads in topology.cores().items():  # one pass over the host
        n = topology.node_of_core(core)
        open_threads = [t for t in threads if t in usable and t not in owner]
        if threads_policy == "prefer":
            free[n] = free.get(n, 0) + len(open_threads)
        elif len(open_threads) == len(threads) and (
            threads_policy == "isolate" or len(threads) > 1
        ):
            free[n] = free.get(n, 0) + 1
    holders: dict[int, dict[str, int]] = {}
    for cpu, guest in owner.items():
        held = holders.setdefault(topology.cpu(cpu).node, {})
        held[guest] = held.get(guest, 0) + 1
    return free, holders
