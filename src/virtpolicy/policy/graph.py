"""The dependency graph over all policies, and start and stop plans from it.

An edge ``web -> db`` means *web depends on db* (``requires`` or ``wants``):
db starts first and stops last. A guest named only as a dependency, with no
policy of its own, is a leaf. Plans are *waves*: every guest of a wave only
depends on guests of earlier waves, so each wave may run in parallel.
"""

from __future__ import annotations

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
    first = {g: {d for d, _ in edges.get(g, ()) if d in selected} for g in selected}
    return _waves(first, edges)


def stop_waves(edges: Edges, roots: Iterable[str] | None = None) -> Waves:
    """Waves to stop ``roots`` (default: every guest), dependents first.

    Stopping a guest first stops every guest that ``requires`` it (systemd's
    rule); guests that only ``want`` it keep running unless selected too.
    """
    selected = all_guests(edges) if roots is None else dependents(edges, roots)
    first: dict[str, set[str]] = {g: set() for g in selected}
    for guest in selected:
        for dep, _ in edges.get(guest, ()):
            if dep in selected:
                first[dep].add(guest)
    return _waves(first, edges)


def _waves(first: Mapping[str, set[str]], edges: Edges) -> Waves:
    """Kahn's algorithm, one level at a time: ``first[g]`` must finish before g.

    A guest lands in the wave right after the last of its ``first``, which is
    as early as the graph allows.
    """
    waiting = {guest: len(before) for guest, before in first.items()}
    then: dict[str, list[str]] = {}
    for guest, before in first.items():
        for other in before:
            then.setdefault(other, []).append(guest)
    waves: Waves = []
    wave = sorted(guest for guest, count in waiting.items() if count == 0)
    placed = 0
    while wave:
        waves.append(wave)
        placed += len(wave)
        ready = []
        for guest in wave:
            for nxt in then.get(guest, ()):
                waiting[nxt] -= 1
                if waiting[nxt] == 0:
                    ready.append(nxt)
        wave = sorted(ready)
    if placed < len(waiting):
        # Guests left waiting sit on or behind a cycle: name one.
        stuck = {g for g, count in waiting.items() if count}
        cycle = find_cycle({g: edges.get(g, ()) for g in stuck}, first=sorted(stuck))
        raise CycleError(cycle or sorted(stuck))
    return waves


def critical_path(edges: Edges, waves: Waves) -> list[str]:
    """The longest chain of dependencies among the planned guests, first to last.

    Without durations, length is the number of guests on the chain: the path
    that decides how many steps a start must take, whatever runs in parallel.
    """
    planned = {g for wave in waves for g in wave}
    best: dict[str, tuple[int, str | None]] = {}
    for wave in waves:
        for guest in wave:
            deps = [d for d, _ in edges.get(guest, ()) if d in planned]
            longest = max(deps, key=lambda d: (best[d][0], d), default=None)
            best[guest] = (best[longest][0] + 1 if longest else 1, longest)
    if not best:
        return []
    node: str | None = max(best, key=lambda g: (best[g][0], g))
    chain = []
    while node is not None:
        chain.append(node)
        node = best[node][1]
    return chain[::-1]
