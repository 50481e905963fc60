"""The dependency graph laid out left to right, and why a guest cannot start.

Pure: the web page's graph view draws what :func:`layered` places, in-process
(no Graphviz process on a reader's request). Columns are the start waves (a
guest to the right of everything it depends on); within a column guests are
ordered to sit near what they connect to (a few barycentre sweeps, as in
Sugiyama's method), which keeps crossings few on the graphs guests make.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from virtpolicy.policy.graph import Edges, Waves

#: How many down-and-up sweeps order the columns.
SWEEPS = 4


def layered(edges: Edges, waves: Waves) -> dict[str, tuple[int, int]]:
    """guest -> (column, row) for every guest of ``waves``: each group of guests
    that depend on one another (the largest first) in rows of its own, an
    empty row between two groups."""
    found: dict[str, tuple[int, int]] = {}
    top = 0
    for group in _groups(edges, [g for wave in waves for g in wave]):
        placed = _layered_one(edges, [[g for g in wave if g in group] for wave in waves])
        found.update((g, (c, r + top)) for g, (c, r) in placed.items())
        top += max(r for _, r in placed.values()) + 2
    return found


def _groups(edges: Edges, guests: list[str]) -> list[set[str]]:
    """The guests in groups linked by dependencies either way, largest first."""
    linked: dict[str, set[str]] = {g: set() for g in guests}
    for guest, deps in edges.items():
        for dep, _kind in deps:
            if guest in linked and dep in linked:
                linked[guest].add(dep)
                linked[dep].add(guest)
    groups, seen = [], set()
    for start in sorted(guests):
        if start in seen:
            continue
        group, todo = set(), [start]
        while todo:
            g = todo.pop()
            if g not in group:
                group.add(g)
                todo.extend(linked[g] - group)
        seen |= group
        groups.append(group)
    return sorted(groups, key=lambda g: (-len(g), min(g)))


def _layered_one(edges: Edges, waves: Waves) -> dict[str, tuple[int, int]]:
    """:func:`layered` for one group."""
    columns = [sorted(wave) for wave in waves]
    column_of = {g: c for c, wave in enumerate(columns) for g in wave}
    left: dict[str, list[str]] = {g: [] for g in column_of}  # what it depends on
    right: dict[str, list[str]] = {g: [] for g in column_of}  # what depends on it
    for guest, deps in edges.items():
        for dep, _kind in deps:
            if guest in column_of and dep in column_of:
                left[guest].append(dep)
                right[dep].append(guest)
    for _ in range(SWEEPS):
        for c in range(1, len(columns)):
            columns[c] = _by_barycentre(columns[c], left, _rows(columns[c - 1]))
        for c in range(len(columns) - 2, -1, -1):
            columns[c] = _by_barycentre(columns[c], right, _rows(columns[c + 1]))
    return {g: (c, r) for c, wave in enumerate(columns) for r, g in enumerate(wave)}


def _rows(column: list[str]) -> dict[str, int]:
    return {g: r for r, g in enumerate(column)}


def _by_barycentre(
    column: list[str], links: Mapping[str, list[str]], rows: Mapping[str, int]
) -> list[str]:
    """``column`` ordered by the mean row of each guest's links in the next column
    (a guest with none keeps its place); ties by name, so it is deterministic."""
    here = _rows(column)

    def key(guest: str) -> tuple[float, str]:
        near = [rows[g] for g in links.get(guest, ()) if g in rows]
        return (sum(near) / len(near) if near else float(here[guest]), guest)

    return sorted(column, key=key)


def blocking_chain(
    guest: str,
    edges: Edges,
    state_of: Callable[[str], str | None],
    host_of: Callable[[str], str | None],
) -> str | None:
    """Why ``guest`` cannot start, as the chain of its ``requires`` down to the
    first guest that is not running (and that nothing of its own holds back):
    ``web ← api ← db: db is shut off on host-a``; None when every guest it
    requires, transitively, runs."""
    chain = [guest]
    seen = {guest}
    node = guest
    while True:
        down = [
            dep
            for dep, kind in sorted(edges.get(node, ()))
            if kind == "requires" and state_of(dep) != "running"
        ]
        if not down:
            break
        node = down[0]
        if node in seen:  # a cycle (refused on write, but a store may hold one)
            break
        seen.add(node)
        chain.append(node)
    if len(chain) == 1:
        return None
    last = chain[-1]
    state = state_of(last)
    host = host_of(last)
    where = f" on {host}" if host else ""
    what = f"{last} is {state}{where}" if state else f"{last} is not defined on any host"
    return " ← ".join(chain) + f": {what}"
