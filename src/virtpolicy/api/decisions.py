"""Routes for tuners: what runs, and the decision log."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query

from virtpolicy.api import schemas
from virtpolicy.api.deps import DaemonDep, Reader, guest_name
from virtpolicy.engine.tuners import available

router = APIRouter(prefix="/v1", tags=["tuners"], responses=schemas.ERRORS)


@router.get("/tuners")
def tuners(who: Reader, daemon: DaemonDep) -> dict[str, Any]:
    """The tuners this daemon runs, whether in dry run, and all installed."""
    return {
        **daemon.tuner_info(),
        "installed": available(),
    }


@router.get("/decisions")
def decisions(
    who: Reader,
    daemon: DaemonDep,
    guest: str | None = None,
    limit: Annotated[int, Query(ge=1, le=10000)] = 100,
) -> list[dict[str, Any]]:
    """Decisions of the tuners, newest first: what was proposed and why,
    and whether it was applied (or why not: waiting, rate limit, dry run, failed)."""
    if guest is not None:
        guest_name(guest)
    return [d.to_dict() for d in daemon.decisions(guest, limit)]
