"""What the web page asks that the rest of the API does not answer in one call:
who is asking, one page of the fleet's guests (filtered), and the dependency
graph laid out, with what blocks each guest that is down.

Readers only: nothing here writes or starts anything.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request

from virtpolicy.api import schemas
from virtpolicy.api.deps import DaemonDep, Fleet, Reader, guest_name, selector
from virtpolicy.api.status import fleet_rows
from virtpolicy.engine import why
from virtpolicy.errors import CycleError, PolicyError
from virtpolicy.policy.graph import critical_path, dependents, requirements, start_waves
from virtpolicy.policy.layout import blocking_chain, layered

router = APIRouter(prefix="/v1", tags=["views"], responses=schemas.ERRORS)

#: The most guests one page of ``/v1/fleet/guests`` holds.
MAX_PAGE = 500


@router.get("/whoami")
async def whoami(who: Reader, request: Request) -> dict[str, Any]:
    """The caller as this listener sees it: the actor its writes are made as, its
    role (reader, operator, admin) and the listener (``unix``, ``unix-ro``,
    ``tcp``). The page offers writes only to an operator or admin."""
    return {"actor": who.actor, "role": who.role, "listener": request.app.state.listener}


@router.get("/fleet/guests")
async def fleet_guests(
    who: Reader,
    daemon: DaemonDep,
    fleet: Fleet,
    host: Annotated[str | None, Query(max_length=255)] = None,
    state: Annotated[str | None, Query(max_length=40)] = None,
    label: Annotated[str | None, Query(max_length=400, description="KEY=VALUE")] = None,
    problems: bool = False,
    q: Annotated[str | None, Query(max_length=200, description="part of the name")] = None,
    offset: Annotated[int, Query(ge=0, le=10_000_000)] = 0,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 100,
) -> dict[str, Any]:
    """One page of every guest in the fleet, with a policy or not (as ``/v1/status``
    has them, with the policy's ``labels``; a guest without a policy has
    ``policy_revision`` null), by name: ``{"total": N, "guests":
    [...]}``, ``total`` counting every guest the filters let through. Filters:
    ``host``, ``state``, ``label`` (``KEY=VALUE``), ``problems`` (drift, a
    problem or an error), ``q`` (part of the name)."""
    wanted = selector(label) if label is not None else None
    policies = await daemon.every_policy()

    def labels_of(guest: str) -> dict[str, str]:
        policy = policies.get(guest)
        return dict(policy.labels) if policy is not None else {}

    every = await fleet_rows(daemon, fleet, None, everyone=True)
    edges = {g: p.dependencies() for g, p in policies.items()}
    _, state_of, host_of = _whereabouts(every)
    rows = [
        row
        for row in (every if host is None else [r for r in every if r["host"] == host])
        if (state is None or row.get("state") == state)
        and (q is None or q in row["guest"])
        and (not problems or row.get("drift") or row.get("problems") or row.get("error"))
        and (wanted is None or labels_of(row["guest"]).get(wanted[0]) == wanted[1])
    ]
    page = [
        {
            **row,
            "labels": labels_of(row["guest"]),
            "why": why.reasons(row, blocked=blocking_chain(row["guest"], edges, state_of, host_of)),
        }
        for row in rows[offset : offset + limit]
    ]
    return {"total": len(rows), "guests": page}


def _whereabouts(
    rows: list[dict[str, Any]], local: Mapping[str, str] | None = None, here: str | None = None
) -> tuple[dict[str, dict[str, Any]], Callable[[str], str | None], Callable[[str], str | None]]:
    """Each guest's row in the fleet (one that runs, of a guest on several hosts),
    and its state and host from them; a guest with no row, from ``local``, this
    host's (``here``) states."""
    where: dict[str, dict[str, Any]] = {}
    for row in rows:
        if row["guest"] not in where or row.get("state") == "running":
            where[row["guest"]] = row
    local = local or {}

    def state_of(g: str) -> str | None:
        row = where.get(g)
        return row.get("state") if row is not None else local.get(g)

    def host_of(g: str) -> str | None:
        row = where.get(g)
        return row.get("host") if row is not None else (here if g in local else None)

    return where, state_of, host_of


@router.get("/graph")
async def graph(
    who: Reader,
    daemon: DaemonDep,
    fleet: Fleet,
    guest: Annotated[str | None, Query(max_length=255)] = None,
    label: Annotated[str | None, Query(max_length=400, description="KEY=VALUE")] = None,
) -> dict[str, Any]:
    """The dependency graph (all of it, around ``guest``: what it depends on and
    what depends on it, or the guests with ``label`` and what they depend on),
    laid out left to right in start waves: ``nodes`` with ``column``, ``row``,
    ``state``, ``host``, ``critical`` (on the longest chain) and ``blocked`` (why
    a guest that is not running cannot start: the chain of what it requires down
    to the first guest not running), and ``edges`` with their condition."""
    wanted = selector(label) if label is not None else None
    if guest is not None:
        guest_name(guest)
    policies = await daemon.every_policy()
    edges = {g: p.dependencies() for g, p in policies.items()}
    every = set(edges) | {d for deps in edges.values() for d, _ in deps}
    if guest is not None:
        scope = requirements(edges, [guest]) | dependents(edges, [guest], ("requires", "wants"))
        scope &= every | {guest}
    elif wanted is not None:
        key, value = wanted
        scope = requirements(edges, [g for g, p in policies.items() if p.labels.get(key) == value])
    else:
        scope = every
    sub = {g: [(d, k) for d, k in edges.get(g, ()) if d in scope] for g in scope}
    try:
        waves = start_waves(sub)
    except CycleError as exc:  # refused on write; a store written by hand may hold one
        raise PolicyError(f"the graph has a cycle: {exc}") from None
    where, state_of, host_of = _whereabouts(
        await fleet_rows(daemon, fleet, None, everyone=True),
        daemon.guest_states(),
        daemon.this_host(),
    )
    positions = layered(sub, waves)
    blocked = {
        g: None if state_of(g) == "running" else blocking_chain(g, sub, state_of, host_of)
        for g in positions
    }
    critical = set(critical_path(sub, waves))
    conditions = {
        (g, d.guest): (kind, d.when)
        for g, p in policies.items()
        for kind, deps in (("requires", p.requires), ("wants", p.wants))
        for d in deps
    }
    return {
        "nodes": [
            {
                "guest": g,
                "column": positions[g][0],
                "row": positions[g][1],
                "state": state_of(g),
                "host": host_of(g),
                "critical": g in critical,
                "blocked": blocked[g],
                "why": why.reasons(where.get(g) or {"state": state_of(g)}, blocked=blocked[g]),
            }
            for g in sorted(positions)
        ],
        "edges": [
            {
                "from": g,
                "to": d,
                "kind": conditions.get((g, d), (k, "running"))[0],
                "when": conditions.get((g, d), (k, "running"))[1],
                "met": state_of(d) == "running",
            }
            for g in sorted(sub)
            for d, k in sorted(sub[g])
        ],
    }
