"""The dependency graph over all policies, and start and stop plans from it.

An edge ``web -> db`` means *web depends on db* (``requires`` or ``wants``):
db starts first and stops last. A guest named only as a dependency, with no
policy of its own, is a leaf. Plans are *waves*: every guest of a wave only
depends on guests of earlier waves, so each wave may run in parallel.
"""

from __future__ import annotations

import graphlib
from collections.abc import Iterable, Mapping, Sequence

from virtpolicy.errors import CycleError

#: guest -> [(dependency, kind)], kind being "requires" or "wants".
Edges = Mapping[str, Sequence[tuple[str, str]]]
Waves = list[list[str]]


def find_cycle(edges: Edges, first: Iterable[str] = ()) -> list[str] | None:
    """Return one cycle as a closed path (``["web", "api", "web"]``) or None.

    The search starts from the guests in ``first`` (say, the ones being
    changed, so the message names what the user touched), then from all others
    in name order, which makes the answer deterministic.
    """
    state: dict[str, int] = {}  # absent: unseen, 1: on the current path, 2: done
    order = list(dict.fromkeys([*first, *sorted(edges)]))
    for root in order:
        if root in state:
            continue
        path: list[str] = [root]
        state[root] = 1
        stack = [iter(sorted(dep for dep, _ in edges.get(root, ())))]
        while stack:
            nxt = next(stack[-1], None)
            if nxt is None:
                stack.pop()
                state[path.pop()] = 2
                continue
            seen = state.get(nxt)
            if seen == 1:
                return [*path[path.index(nxt) :], nxt]
            if seen is None:
                state[nxt] = 1
                path.append(nxt)
                stack.append(iter(sorted(dep for dep, _ in edges.get(nxt, ()))))
    return None


def check_acyclic(edges: Edges, first: Iterable[str] = ()) -> None:
    """Raise :class:`CycleError` naming a cycle if ``edges`` has one."""
    cycle = find_cycle(edges, first)
    if cycle is not None:
        raise CycleError(cycle)


def requirements(edges: Edges, roots: Iterable[str]) -> set[str]:
    """``roots`` and everything they depend on, transitively (requires and wants)."""
    seen: set[str] = set()
    todo = list(roots)
    while todo:
        guest = todo.pop()
        if guest not in seen:
            seen.add(guest)
            todo.extend(dep for dep, _ in edges.get(guest, ()))
    return seen


def dependents(
    edges: Edges, roots: Iterable[str], kinds: Sequence[str] = ("requires",)
) -> set[str]:
    """``roots`` and every guest that depends on them by one of ``kinds``, transitively."""
    reverse: dict[str, list[str]] = {}
    for guest, deps in edges.items():
        for dep, kind in deps:
            if kind in kinds:
                reverse.setdefault(dep, []).append(guest)
    seen: set[str] = set()
    todo = list(roots)
    while todo:
        guest = todo.pop()
        if guest not in seen:
            seen.add(guest)
            todo.extend(reverse.get(guest, ()))
    return seen


def all_guests(edges: Edges) -> set[str]:
    """Every guest in the graph: those with policies and those only depended on."""
    return set(edges) | {dep for deps in edges.values() for dep, _ in deps}


def start_waves(edges: Edges, roots: Iterable[str] | None = None) -> Waves:
    """Waves to start ``roots`` (default: every guest) and what they depend on."""
    selected = all_guests(edges) if roots is None else requirements(edges, roots)
    graph = {g: [d for d, _ in edges.get(g, ()) if d in selected] for g in selected}
    return _waves(graph, reverse_cycle=False)


def stop_waves(edges: Edges, roots: Iterable[str] | None = None) -> Waves:
    """Waves to stop ``roots`` (default: every guest), dependents first.

    Stopping a guest first stops every guest that ``requires`` it (systemd's
    rule); guests that only ``want`` it keep running unless selected too.
    """
    selected = all_guests(edges) if roots is None else dependents(edges, roots)
    graph: dict[str, list[str]] = {g: [] for g in selected}
    for guest in selected:
        for dep, _ in edges.get(guest, ()):
            if dep in selected:
                graph[dep].append(guest)
    return _waves(graph, reverse_cycle=True)


def _waves(graph: Mapping[str, Iterable[str]], *, reverse_cycle: bool) -> Waves:
    sorter = graphlib.TopologicalSorter(graph)
    try:
        sorter.prepare()
    except graphlib.CycleError as exc:
        # graphlib lists a cycle predecessor-first; we name it dependent-first.
        cycle: list[str] = list(exc.args[1])
        raise CycleError(cycle if reverse_cycle else cycle[::-1]) from None
    waves: Waves = []
    while sorter.is_active():
        ready = sorted(sorter.get_ready())
        waves.append(ready)
        sorter.done(*ready)
    return waves
