"""May a guest start now? The question libvirt's hook asks before a start.

Answered from the state the daemon keeps from libvirt events, never from
libvirt about the guest being started: libvirtd holds that guest's job lock
while its hook runs, and asking about it would deadlock. Each ``requires``
dependency must be running, and its condition must hold as the daemon's own
probes last saw it (:mod:`~virtpolicy.engine.jobs.prober`): a request never
probes. ``wants`` never blocks a start.

A dependency on another host of the fleet is answered from the fleet's state
as this daemon last read it from the store: its state there, and for
``agent`` what that host's own probe saw (``tcp:`` and ``exec:`` are probed
from here, the host that starts the dependent). When that host is lost, or
the fleet's state is stale, the daemon cannot tell: it says so
(:class:`~virtpolicy.errors.UnknownStateError`, HTTP 503) unless another
dependency refuses for sure, and the hook follows its hook_failure mode.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from typing import Protocol

from virtpolicy.errors import UnknownStateError
from virtpolicy.policy.condition import parse_condition
from virtpolicy.policy.cpuset import cpus_in
from virtpolicy.policy.model import AUTO, GuestPolicy
from virtpolicy.store.base import GuestState, HostRecord


class Observations(Protocol):
    async def observed(self, guest: str, condition: str) -> str | None:
        """The latest result of probing ``condition`` on ``guest`` (None: it holds)."""


class Fleet(Protocol):
    def where(self, guest: str) -> list[tuple[GuestState, HostRecord | None]]:
        """``guest`` on the other hosts, with each host's record."""

    def stale(self, now: float) -> float | None:
        """How old the fleet's state is, when too old to answer from; else None."""

    def as_of(self) -> float:
        """When the fleet's state was read: what a host's heartbeat is judged against
        (a daemon that cannot read the store cannot tell that a host is lost)."""


class _NoFleet:
    def where(self, guest: str) -> list[tuple[GuestState, HostRecord | None]]:
        return []

    def stale(self, now: float) -> float | None:
        return None

    def as_of(self) -> float:
        return time.time()


async def refusals(
    guest: str,
    policy: GuestPolicy | None,
    states: Mapping[str, str],
    probes: Observations,
    fleet: Fleet | None = None,
) -> list[str]:
    """Why ``guest`` may not start now: one line per unmet ``requires`` (none: it
    may). UnknownStateError when nothing refuses for sure but something cannot be
    told."""
    if policy is None:
        return []
    where = fleet or _NoFleet()
    checks = [_check(guest, dep.guest, dep.when, states, probes, where) for dep in policy.requires]
    answers = await asyncio.gather(*checks)
    sure = [reason for reason, unknown in answers if reason and not unknown]
    if not sure and any(unknown for _, unknown in answers):
        raise UnknownStateError("; ".join(r for r, unknown in answers if unknown and r))
    return sure


async def _check(
    guest: str,
    dep: str,
    when: str,
    states: Mapping[str, str],
    probes: Observations,
    fleet: Fleet,
) -> tuple[str | None, bool]:
    """(Why not, or None; whether that is an unknown rather than a refusal.)"""
    prefix = f"{guest} requires {dep} ({when})"
    state = states.get(dep)
    if state is None:
        return await _elsewhere(prefix, dep, when, probes, fleet)
    if state != "running":
        return f"{prefix}: {dep} is {state}", False
    if parse_condition(when).kind == "running":
        return None, False
    observed = await probes.observed(dep, when)
    return (f"{prefix}: {observed}" if observed else None), False


async def _elsewhere(
    prefix: str, dep: str, when: str, probes: Observations, fleet: Fleet
) -> tuple[str | None, bool]:
    """``dep`` is not on this host: as the fleet's state has it."""
    now = time.time()
    stale = fleet.stale(now)  # what this daemon knows is too old to tell anything
    if stale is not None:
        return f"{prefix}: the fleet's state is {stale:.0f} s old (store unreachable?)", True
    found = fleet.where(dep)
    if not found:
        return f"{prefix}: {dep} is not defined on this host or any other", False
    # The running one on a live host if any (a migration shows it on two hosts).
    then = fleet.as_of()
    found.sort(key=lambda f: (not f[0].running, f[1] is None or f[1].shown_state(then) != "up"))
    there, host = found[0]
    if host is None or host.shown_state(then) != "up":
        seen = f"last heartbeat {now - host.heartbeat_at:.0f} s ago" if host else "unknown"
        state = host.shown_state(then) if host else "unknown"
        return f"{prefix}: {dep}'s host {there.host} is {state} ({seen})", True
    if not there.running:
        return f"{prefix}: {dep} is {there.state} on {there.host}", False
    kind = parse_condition(when).kind
    if kind == "running":
        return None, False
    if kind == "agent":  # only its own host can ask its agent
        holds = there.ready.get(when)
        if holds is None:
            return f"{prefix}: {when} not probed yet on {there.host}", True
        return (None if holds else f"{prefix}: {when} does not hold on {there.host}"), False
    observed = await probes.observed(dep, when)  # tcp: and exec: from here
    return (f"{prefix}: {observed}" if observed else None), False


def migration_refusals(guest: str, policy: GuestPolicy | None, host_cpus: int) -> list[str]:
    """Why ``guest`` may not migrate to this host (the hook's ``migrate begin`` on the
    destination): fixed pins onto host CPUs this host lacks. ``cpu.vcpus: auto`` is
    placed afresh here, and ``allowed`` is cut to the CPUs there are."""
    if policy is None:
        return []
    cpu = policy.cpu
    fixed = [(f"cpu.vcpupin.{v}", c) for v, c in sorted(cpu.vcpupin.items())]
    if cpu.vcpus not in (None, AUTO):
        fixed.append(("cpu.vcpus", cpu.vcpus))
    if cpu.emulatorpin is not None:
        fixed.append(("cpu.emulatorpin", cpu.emulatorpin))
    return [
        f"{guest}: {where} = {cpus} names host CPUs this host lacks (it has {host_cpus}:"
        f" 0-{host_cpus - 1}); pin it for this host, or use cpu.vcpus: auto"
        for where, cpus in fixed
        if cpus is not None and max(cpus_in(cpus), default=-1) >= host_cpus
    ]
