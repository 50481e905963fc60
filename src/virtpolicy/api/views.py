"""What the web page asks that the rest of the API does not answer in one call:
who is asking, and one page of the fleet's guests, filtered.

Readers only: nothing here writes or starts anything.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request

from virtpolicy.api import schemas
from virtpolicy.api.deps import DaemonDep, Reader, Store
from virtpolicy.api.status import fleet_rows
from virtpolicy.errors import PolicyError

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
    store: Store,
    host: Annotated[str | None, Query(max_length=255)] = None,
    state: Annotated[str | None, Query(max_length=40)] = None,
    label: Annotated[str | None, Query(max_length=400, description="KEY=VALUE")] = None,
    problems: bool = False,
    q: Annotated[str | None, Query(max_length=200, description="part of the name")] = None,
    offset: Annotated[int, Query(ge=0, le=10_000_000)] = 0,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 100,
) -> dict[str, Any]:
    """One page of every guest with a policy in the fleet (as ``/v1/status`` has
    them, with the policy's ``labels``), by name: ``{"total": N, "guests":
    [...]}``, ``total`` counting every guest the filters let through. Filters:
    ``host``, ``state``, ``label`` (``KEY=VALUE``), ``problems`` (drift, a
    problem or an error), ``q`` (part of the name)."""
    wanted: tuple[str, str] | None = None
    if label is not None:
        key, sep, value = label.partition("=")
        if not sep or not key:
            raise PolicyError(f'label: "{label[:40]}" is not KEY=VALUE', field="label")
        wanted = (key, value)
    policies = daemon.policies()
    rows = []
    for row in await fleet_rows(daemon, store, host):
        policy = policies.get(row["guest"])
        labels = dict(policy.labels) if policy is not None else {}
        if state is not None and row.get("state") != state:
            continue
        if wanted is not None and labels.get(wanted[0]) != wanted[1]:
            continue
        if problems and not (row.get("drift") or row.get("problems") or row.get("error")):
            continue
        if q and q not in row["guest"]:
            continue
        rows.append({**row, "labels": labels})
    return {"total": len(rows), "guests": rows[offset : offset + limit]}
