"""May a guest start now? The question libvirt's hook asks before a start.

Answered from the state the daemon keeps from libvirt events, never from
libvirt about the guest being started: libvirtd holds that guest's job lock
while its hook runs, and asking about it would deadlock. Each ``requires``
dependency must be running, and its condition must hold as the daemon's own
probes last saw it (:mod:`~virtpolicy.engine.prober`): a request never
probes. ``wants`` never blocks a start.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Protocol

from virtpolicy.policy.condition import parse_condition
from virtpolicy.policy.model import GuestPolicy


class Observations(Protocol):
    async def observed(self, guest: str, condition: str) -> str | None:
        """The latest result of probing ``condition`` on ``guest`` (None: it holds)."""


async def refusals(
    guest: str,
    policy: GuestPolicy | None,
    states: Mapping[str, str],
    probes: Observations,
) -> list[str]:
    """Why ``guest`` may not start now: one line per unmet ``requires`` (none: it may)."""
    if policy is None:
        return []
    checks = [_check(guest, dep.guest, dep.when, states, probes) for dep in policy.requires]
    answers = await asyncio.gather(*checks)
    return [reason for reason in answers if reason]


async def _check(
    guest: str, dep: str, when: str, states: Mapping[str, str], probes: Observations
) -> str | None:
    prefix = f"{guest} requires {dep} ({when})"
    state = states.get(dep)
    if state is None:
        return f"{prefix}: {dep} is not defined on this host"
    if state != "running":
        return f"{prefix}: {dep} is {state}"
    if parse_condition(when).kind == "running":
        return None
    observed = await probes.observed(dep, when)
    return f"{prefix}: {observed}" if observed else None
