"""Routes for what the daemon sees: guest status, admission and host info.

All answered from the daemon's memory, on the event loop, without a thread:
they stay quick whatever the store or libvirt are doing.
"""

from __future__ import annotations

import asyncio
import heapq
import logging
from typing import Annotated, Any, cast

from fastapi import APIRouter, Header, Query
from fastapi.responses import PlainTextResponse

from virtpolicy.api import schemas
from virtpolicy.api.deps import DaemonDep, Fleet, GuestPath, Reader, Store
from virtpolicy.engine import fleetview, why
from virtpolicy.engine.tuning.reconcile import GuestStatus
from virtpolicy.errors import NotFoundError, StoreError, UnknownStateError

log = logging.getLogger(__name__)

router = APIRouter(prefix="/v1", tags=["status"], responses=schemas.ERRORS)


@router.get("/status")
async def status_all(
    who: Reader,
    daemon: DaemonDep,
    fleet: Fleet,
    host: Annotated[str | None, Query(max_length=255, description="only this host's")] = None,
) -> list[dict[str, Any]]:
    """Desired vs actual tuning, drift and errors of every guest with a policy, in
    the whole fleet: this host's as the daemon has them now, the other hosts' as
    they last published them to the store (each with its ``host``; read at most
    every 2 s for all callers)."""
    return await fleet_rows(daemon, fleet, host)


@router.get("/guests/{guest}/status")
async def status_one(
    guest: GuestPath, who: Reader, daemon: DaemonDep, store: Store
) -> dict[str, Any]:
    """Desired vs actual tuning, drift and errors of one guest (on any host)."""
    mine = daemon.this_host()
    local = [s for s in daemon.statuses() if s.guest == guest]
    if local and guest in daemon.guest_states():
        return {**local[0].to_dict(), "host": mine, "state": daemon.guest_states()[guest]}
    try:
        elsewhere = await asyncio.to_thread(fleetview.statuses, store, besides=mine, guest=guest)
    except StoreError as exc:
        log.warning("status: the other hosts' are not in reach: %s", exc)
        elsewhere = []
    if elsewhere:
        return elsewhere[0]
    if local:  # a policy whose guest no host has
        return {**local[0].to_dict(), "host": None}
    raise NotFoundError(f"{guest}: no status (no policy, or not seen yet)")


UNREACHABLE = f"{why.STORE_UNREACHABLE} (this host enforces the policies as last read)"


async def fleet_rows(
    daemon: DaemonDep, fleet: fleetview.FleetReads, host: str | None, *, everyone: bool = False
) -> list[dict[str, Any]]:
    """Every guest's status in the fleet (of ``host`` only, if given), by guest
    then host: this host's as the daemon has them, the others' as the store had
    them (``fleet``), and a row on no host for a policy whose guest no host has;
    with ``everyone``, a row (name, host, state) for each guest without a policy
    too. Merged in a thread: with 10,000 guests that is work the loop must not do."""
    mine = daemon.this_host()
    # Copies taken on the loop, where they change. The state is libvirt's, as
    # its events last told it (a pass may be older: a guest at rest is not
    # passed again).
    here, statuses = dict(daemon.guest_states()), daemon.statuses()
    reachable = daemon.host_info()["fleet"]["store"] == "ok"
    others: list[dict[str, Any]] = []
    elsewhere: frozenset[str] = frozenset()
    try:
        if host != mine:  # only this host's asked for: the store has nothing to add
            others, elsewhere = await asyncio.to_thread(
                fleet.statuses_and_guests, mine, everyone=everyone
            )
    except StoreError as exc:  # this host's still answer
        log.warning("status: the other hosts' are not in reach: %s", exc)
        reachable = False
    return await asyncio.to_thread(
        _merged, mine, here, statuses, others, elsewhere, host, reachable, everyone
    )


def _merged(
    mine: str,
    here: dict[str, str],
    statuses: list[GuestStatus],
    others: list[dict[str, Any]],
    elsewhere: frozenset[str],
    host: str | None,
    reachable: bool,
    everyone: bool,
) -> list[dict[str, Any]]:
    few = []
    if everyone and host in (None, mine):
        managed = {s.guest for s in statuses}
        few += [
            {**fleetview.unmanaged(g), "host": mine, "state": state}
            for g, state in here.items()
            if g not in managed
        ]
    for status in statuses:  # one pass: most are of guests on other hosts
        if status.guest in here:
            row = {**status.to_dict(), "host": mine, "state": here[status.guest]}
            if not reachable:  # said on each row of this host: enforced as last read
                row["problems"] = [*cast(list[str], row.get("problems") or []), UNREACHABLE]
            if host in (None, mine):
                few.append(row)
        elif host is None and status.guest not in elsewhere:  # on no host
            few.append({**status.to_dict(), "host": None})
    few.sort(key=lambda r: (r["guest"], r["host"] or ""))
    if host is not None:
        others = [r for r in others if r["host"] == host]
    # ``others`` comes sorted by guest then host: merge the few into it.
    return list(heapq.merge(others, few, key=lambda r: (r["guest"], r["host"] or "")))


@router.get(
    "/guests/{guest}/admission",
    responses={200: {"content": {"application/json": {}, "text/plain": {}}}},
)
async def admission(
    guest: GuestPath, who: Reader, daemon: DaemonDep, accept: Annotated[str | None, Header()] = None
) -> Any:
    """May ``guest`` start now? What libvirt's hook asks before a start.

    With ``Accept: text/plain`` (the hook, which keeps its imports few) the
    answer is ``allowed``, or ``refused`` and a line of reasons, or ``unknown``
    and why (a dependency's host is lost; the hook's hook_failure decides).
    """
    try:
        reasons = await daemon.admission(guest)
    except UnknownStateError as exc:
        if not _plain(accept):
            raise
        return PlainTextResponse(f"unknown\n{exc}\n")  # the hook: its hook_failure decides
    return _verdict(guest, reasons, accept)


@router.get(
    "/guests/{guest}/migration",
    responses={200: {"content": {"application/json": {}, "text/plain": {}}}},
)
async def migration(
    guest: GuestPath,
    who: Reader,
    daemon: DaemonDep,
    accept: Annotated[str | None, Header()] = None,
    vcpus: Annotated[int | None, Query(ge=1, le=4096)] = None,
    to: Annotated[str | None, Query(min_length=1, max_length=255)] = None,
) -> Any:
    """May ``guest`` migrate to this host? What libvirt's hook asks on the
    destination before a migration (``migrate begin``): its fixed pins must name
    host CPUs this host has, and, given its ``vcpus``, the placer must find it a
    place here (its dedicated CPUs, its NUMA nodes). Answered like admission.

    With ``to``, may it migrate to that host of the fleet, as its daemon last
    published itself (what ``virtpolicy migrate`` asks before anything moves)."""
    return _verdict(guest, await daemon.migration(guest, vcpus, to), accept)


def _plain(accept: str | None) -> bool:
    """The hook asks for plain text (it keeps its imports few)."""
    return bool(accept and "text/plain" in accept and "json" not in accept)


def _verdict(guest: str, reasons: list[str], accept: str | None) -> Any:
    """``allowed``, or ``refused`` and a line of reasons: as JSON, or as the hook's text."""
    if _plain(accept):
        text = "allowed\n" if not reasons else "refused\n" + "; ".join(reasons) + "\n"
        return PlainTextResponse(text)
    return {"guest": guest, "allowed": not reasons, "reasons": reasons}


hook_router = APIRouter(prefix="/v1", tags=["hook"], responses=schemas.ERRORS)


@hook_router.post("/hook/{guest}/{operation}/{phase}", status_code=204)
async def hook_event(
    guest: str, operation: str, phase: str, who: Reader, daemon: DaemonDep
) -> None:
    """libvirt's hook reports an operation (started, stopped, release, ...); only on
    the hook's own socket (root), so that no one else can claim a guest runs."""
    daemon.hook_event(guest, operation, phase)


@router.get("/host")
async def host(who: Reader, daemon: DaemonDep) -> dict[str, Any]:
    """The libvirt connection and the host's CPUs."""
    return daemon.host_info()


@router.get("/placement")
async def placement(
    who: Reader,
    daemon: DaemonDep,
    host: Annotated[str | None, Query(max_length=255)] = None,
) -> dict[str, Any]:
    """Where the placer puts this host's guests, as of the latest pass: each
    guest's ``vcpupin`` and ``emulatorpin``, the ``refused`` with the reason, and
    each host CPU's use by node and core. ``in_play`` is false until the config
    reserves CPUs or a policy asks for dedicated CPUs or NUMA nodes: until then
    nothing is pinned for placement. With ``host``, another host of the fleet's,
    as its daemon last published it (404 when it has not)."""
    found = await asyncio.to_thread(daemon.placement, host)
    if found is None:
        raise NotFoundError(f"{host}: no placement published by such a host")
    return found


@router.get("/hosts")
async def hosts(who: Reader, fleet: Fleet) -> list[dict[str, Any]]:
    """Every host of the fleet sharing this store: state (up, lost after three
    missed heartbeats, left after a clean stop), URI, guests, last heartbeat."""
    return await asyncio.to_thread(fleet.hosts)
