"""``virtpolicy migrate``: a running guest moved live to another host of the fleet,
its policy with it.

Before anything moves, the destination is asked as its daemon last published
itself (:func:`destination_refusals`): it must be up and take migrations, the
guest's fixed pins must name CPUs it has, and its placer must find the guest
room (its dedicated CPUs, its NUMA nodes) among the dedicated guests there. A
refusal there refuses the request, and nothing is recorded. Then the guest's
own host runs the job's step: it asks again (a beat may have passed), has its
libvirtd migrate the guest peer to peer to the destination's, and records the
outcome. The destination's hook (``migrate begin``) asks its daemon a last
time, live; its refusal fails the step with its reason, and the guest stays.
On arrival the destination's daemon puts the policy in place (``migrated
in``), and the source's placer gives back what the guest held there.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field

from virtpolicy.engine.jobs.admission import migration_refusals
from virtpolicy.engine.jobs.orchestrate import GuestResult, Progress, Remote
from virtpolicy.errors import HypervisorError, StoreError
from virtpolicy.hypervisor.base import Hypervisor
from virtpolicy.policy.model import GuestPolicy
from virtpolicy.policy.placement import request_for
from virtpolicy.policy.room import from_record, room_for
from virtpolicy.policy.text import printable
from virtpolicy.store.base import HostRecord, Whereabouts
from virtpolicy.store.jobrecords import Result


@dataclass(frozen=True, slots=True)
class Verdict:
    """Where ``guest`` runs now, the destination's record, and why it may not go
    there (empty: it may)."""

    source: str | None
    destination: HostRecord | None
    reasons: list[str]


def destination_refusals(
    store: Whereabouts, guest: str, to: str, policy: GuestPolicy | None, here: str | None = None
) -> Verdict:
    """(In a thread.) May ``guest`` migrate to host ``to`` now, as the fleet's
    records have it? See the module's docstring. ``here``: the asking daemon's
    host, when libvirt there says the guest runs (fresher than its last beat)."""
    now = time.time()
    hosts = {h.name: h for h in store.hosts()}
    dest = hosts.get(to)
    if dest is None:
        return _verdict(None, None, [f"{to}: no such host in the fleet"])
    state = dest.shown_state(now)
    if state != "up":
        return _verdict(None, dest, [f"{to} is {state}: no daemon there to take {guest}"])
    running = [
        r
        for r in store.guest_states(guests=[guest])
        if r.running and (h := hosts.get(r.host)) is not None and h.shown_state(now) == "up"
    ]
    if not running and here is None:
        why = f"{guest} runs on no host that is up: only a running guest migrates"
        return _verdict(None, dest, [why])
    source = here or running[0].host
    if source == to:
        return _verdict(source, dest, [f"{guest} runs on {to} already"])
    if dest.migration is None:
        why = f"{to} takes no migrations: its daemon publishes no migration URI (migration.uri)"
        return _verdict(source, dest, [why])
    reasons = migration_refusals(guest, policy, dest.cpus)
    vcpus = _vcpus(hosts[source], guest)
    room = from_record((dest.placement or {}).get("room"))
    if vcpus and room is not None:
        topology, reserved, kept, in_play = room
        kept.pop(guest, None)
        refused = room_for(topology, reserved, kept, request_for(guest, vcpus, policy), in_play)
        if refused:
            reasons.append(f"no room on {to}: {refused}")
    return _verdict(source, dest, reasons)


def _verdict(source: str | None, dest: HostRecord | None, reasons: list[str]) -> Verdict:
    """The verdict, its reasons each on one line (a name may hold any character
    but '/': one that ends a line is shown escaped)."""
    return Verdict(source, dest, [printable(r) for r in reasons])


def _vcpus(source: HostRecord, guest: str) -> int | None:
    """``guest``'s vCPUs as its host's placer last published them (None: not known)."""
    placed = ((source.placement or {}).get("guests") or {}).get(guest)
    pins = placed.get("vcpupin") if isinstance(placed, dict) else None
    return len(pins) if isinstance(pins, dict) and pins else None


@dataclass
class Migrator:
    """Runs a migrate job's steps on this host: one guest after another (their
    streams would share the link), each asked about, moved and reported."""

    hypervisor: Hypervisor
    to: str
    #: The destination's verdict on a guest, read from the store now.
    ask: Callable[[str], Awaitable[Verdict]]
    progress: Progress = lambda _g, _e, _d: None
    #: In a fleet: the steps of guests on other hosts, which their daemons run.
    remote: Remote | None = None
    results: list[GuestResult] = field(default_factory=list)

    async def migrate(self, guests: Iterable[str] | None) -> list[GuestResult]:
        t0 = time.monotonic()
        self.results = []
        for guest in guests or ():
            if self.remote is not None and not self.remote.owns(guest):
                result, detail = await self.remote.outcome(guest)
                self.results.append(
                    GuestResult(guest, Result(result), time.monotonic() - t0, detail)
                )
                continue
            result, detail = await self._one(guest)
            self.progress(guest, result, detail)
            self.results.append(GuestResult(guest, result, time.monotonic() - t0, detail))
        return self.results

    async def _one(self, guest: str) -> tuple[Result, str]:
        self.progress(guest, Result.MIGRATING, f"asking {self.to}")
        try:
            verdict = await self.ask(guest)
        except StoreError as exc:
            return Result.FAILED, f"cannot ask {self.to}: {exc}"
        if verdict.reasons:
            return Result.REFUSED, "; ".join(verdict.reasons)
        assert verdict.destination is not None
        assert verdict.destination.migration is not None
        where = verdict.destination.migration
        self.progress(guest, Result.MIGRATING, f"to {self.to}: live, peer to peer")
        began = time.monotonic()
        try:
            await asyncio.to_thread(
                self.hypervisor.migrate, guest, str(where["uri"]), where.get("stream")
            )
        except HypervisorError as exc:
            return Result.FAILED, str(exc)
        return Result.MIGRATED, f"to {self.to} in {time.monotonic() - began:.1f} s"
