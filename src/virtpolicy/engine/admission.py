"""May a guest start now? The question libvirt's hook asks before a start.

Answered from the state the daemon keeps from libvirt events, never from
libvirt about the guest being started: libvirtd holds that guest's job lock
while its hook runs, and asking about it would deadlock. Each ``requires``
dependency must be running, and its condition must hold on one probe, which
is bounded in time. ``wants`` never blocks a start.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping

from virtpolicy.engine.conditions import PROBE_TIMEOUT_S, Guests, probe_for
from virtpolicy.policy.condition import parse_condition
from virtpolicy.policy.model import GuestPolicy

#: The whole answer must come well inside the hook's patience.
ADMISSION_TIMEOUT_S = PROBE_TIMEOUT_S


async def refusals(
    guest: str,
    policy: GuestPolicy | None,
    states: Mapping[str, str],
    guests: Guests,
) -> list[str]:
    """Why ``guest`` may not start now: one line per unmet ``requires`` (none: it may)."""
    if policy is None:
        return []
    checks = [_check(guest, dep.guest, dep.when, states, guests) for dep in policy.requires]
    answers = await asyncio.gather(*checks)
    return [reason for reason in answers if reason]


async def _check(
    guest: str, dep: str, when: str, states: Mapping[str, str], guests: Guests
) -> str | None:
    prefix = f"{guest} requires {dep} ({when})"
    state = states.get(dep)
    if state is None:
        return f"{prefix}: {dep} is not defined on this host"
    if state != "running":
        return f"{prefix}: {dep} is {state}"
    if parse_condition(when).kind == "running":
        return None
    try:
        observed = await asyncio.wait_for(probe_for(dep, when, guests)(), ADMISSION_TIMEOUT_S)
    except TimeoutError:
        observed = f"no answer within {ADMISSION_TIMEOUT_S:.0f} s"
    return f"{prefix}: {observed}" if observed else None
