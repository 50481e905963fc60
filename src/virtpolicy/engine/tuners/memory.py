"""``memory``: move memory between guests by need, through their balloons.

A pure function of what the host and each guest say about memory now. It
proposes a balloon target per guest, each with its reason; the caller applies
them. Guests whose policy says ``memory.balloon: auto`` take part; each keeps at
least its ``floor`` and never gets more than its defined memory.

One round:

1. **A guest in distress comes first**, whatever the host's state: one whose
   guest swaps in or takes major faults (the kernel reading its disk for pages it
   had) gets its defined memory back at once.
2. **The host needs memory** when more than ``target`` % of it is in use, or
   when its tasks stall for memory (PSI ``some`` over ``stall`` %: pressure,
   before occupancy shows it). Then memory is taken from the guests with the
   most room above their own need (what their guest reports usable, less a
   margin), in proportion to that room divided by their ``weight``, at most a
   step per guest per round, never below the floor.
3. **The host has room** when it is ``hysteresis`` points under the target and
   does not stall: memory goes back, the guests nearest their own need first,
   a step each, as far as the room goes.

A guest without a balloon driver's statistics is left where it is, with the
reason (no need can be told).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from virtpolicy.engine.tuners import Action, Context
from virtpolicy.hypervisor.stats import MEMORY_NOW, HostMemory

MIB = 1024  # KiB
#: A guest is in distress when its guest swaps in or faults pages in faster
#: than this (KiB/s, faults/s) over the last interval.
SWAP_IN_KIB_S = 64.0
MAJOR_FAULTS_S = 50.0
#: ... or when what it could still use is under this share of what it has:
#: its OOM killer is next (a guest without swap shows no other sign).
USABLE_LOW = 0.05


@dataclass(frozen=True, slots=True)
class GuestMemory:
    """One guest taking part: its balloon now, its bounds, what its guest says."""

    name: str
    actual_kib: int  # the balloon's current size: what the guest has
    maximum_kib: int  # its defined memory
    floor_kib: int
    weight: int = 100
    #: What the guest could give without reclaiming anything it uses (its
    #: balloon driver's ``usable``, else ``unused``); None: it does not say.
    free_kib: int | None = None
    #: Swapping in or taking major faults now (the caller judges the rates).
    distress: bool = False


@dataclass(frozen=True, slots=True)
class Move:
    """A proposed balloon target for one guest, or a skip (``target_kib`` None)."""

    guest: str
    target_kib: int | None
    reason: str
    urgent: bool = False


@dataclass(frozen=True, slots=True)
class Settings:
    target: float = 80.0  # % of host memory in use to aim for
    stall: float = 10.0  # PSI some avg10 (%) that says the host needs memory
    hysteresis: float = 5.0  # points under the target before giving back
    step: float = 5.0  # % of a guest's defined memory moved per round, at most
    min_step_kib: int = 16 * MIB  # smaller moves are not worth a balloon change
    margin: float = 10.0  # % of its memory a guest keeps free above its need


def plan(
    host: HostMemory, guests: Sequence[GuestMemory], settings: Settings = Settings()
) -> list[Move]:
    """One round's balloon targets (only those that change) and skips."""
    moves: list[Move] = []
    known: list[GuestMemory] = []
    for g in guests:
        if g.free_kib is None and not g.distress:
            moves.append(Move(g.name, None, "no statistics from its balloon driver: left as it is"))
        else:
            known.append(g)
    for g in known:
        if g.actual_kib < g.floor_kib and not g.distress:
            moves.append(
                Move(g.name, g.floor_kib, f"below its floor: back to {_size(g.floor_kib)}")
            )
    distressed = [g for g in known if g.distress]
    for g in distressed:
        if g.actual_kib < g.maximum_kib:
            moves.append(
                Move(
                    g.name,
                    g.maximum_kib,
                    f"in distress (swapping in or faulting pages in): given back all of its "
                    f"{_size(g.maximum_kib)} at once",
                    urgent=True,
                )
            )
    calm = [g for g in known if not g.distress and g.actual_kib >= g.floor_kib]
    used = host.used_percent
    stalled = _stalled(host, settings)
    given_kib = sum(g.maximum_kib - g.actual_kib for g in distressed)
    if used > settings.target or stalled:
        over_kib = int((used - settings.target) / 100 * host.total_kib) + given_kib
        need_kib = max(over_kib, _step_kib(calm, settings) if stalled else 0)
        why = (
            f"the host is at {used:.0f} % in use (target {settings.target:.0f} %)"
            if used > settings.target
            else f"the host stalls for memory ({host.stall:.0f} % of the time)"
        )
        moves += _take(calm, need_kib, why, settings)
    elif used < settings.target - settings.hysteresis and not stalled:
        room_kib = int((settings.target - used) / 100 * host.total_kib) - given_kib
        moves += _give(calm, room_kib, used, settings)
    return moves


def settings_from(given: Mapping[str, Any]) -> Settings:
    """The memory tuner's settings from the tuners' (``memory.target``, ...)."""
    default = Settings()
    return Settings(
        target=float(given.get("memory.target", default.target)),
        stall=float(given.get("memory.stall", default.stall)),
        step=float(given.get("memory.step", default.step)),
    )


def needs_memory(host: HostMemory, settings: Settings) -> bool:
    """Whether the host needs memory back: over its target, or stalling."""
    return host.used_percent > settings.target or _stalled(host, settings)


def _stalled(host: HostMemory, settings: Settings) -> bool:
    return host.stall is not None and host.stall >= settings.stall


def _take(guests: Sequence[GuestMemory], need_kib: int, why: str, settings: Settings) -> list[Move]:
    """Take ``need_kib`` from the guests with the most room, by weight."""
    room = {g.name: _room_kib(g, settings) for g in guests}
    able = [g for g in guests if room[g.name] >= settings.min_step_kib]
    if need_kib <= 0 or not able:
        return []
    pull = {g.name: room[g.name] * 100 / g.weight for g in able}
    total = sum(pull.values())
    moves = []
    for g in sorted(able, key=lambda g: -pull[g.name]):
        share = need_kib * pull[g.name] / total
        take = int(min(share, room[g.name], _limit_kib(g, settings)))
        if take < settings.min_step_kib:
            continue
        moves.append(
            Move(
                g.name,
                g.actual_kib - take,
                f"{why}: {_size(take)} of its {_size(room[g.name])} above its need "
                f"(weight {g.weight})",
            )
        )
    return moves


def _give(
    guests: Sequence[GuestMemory], room_kib: int, used: float, settings: Settings
) -> list[Move]:
    """Give back up to ``room_kib``, the guests nearest their need first."""
    moves = []
    for g in sorted(guests, key=lambda g: (_room_kib(g, settings), g.name)):
        give = min(g.maximum_kib - g.actual_kib, _limit_kib(g, settings), room_kib)
        if give < settings.min_step_kib and g.actual_kib + give < g.maximum_kib:
            continue
        if give <= 0:
            continue
        room_kib -= give
        moves.append(
            Move(
                g.name,
                g.actual_kib + give,
                f"the host is at {used:.0f} % in use, under its target: {_size(give)} back",
            )
        )
    return moves


def _room_kib(g: GuestMemory, settings: Settings) -> int:
    """What ``g`` could give: its free memory less the margin, above its floor."""
    free = g.free_kib or 0
    return max(0, min(g.actual_kib - g.floor_kib, free - int(g.actual_kib * settings.margin / 100)))


def _limit_kib(g: GuestMemory, settings: Settings) -> int:
    return max(settings.min_step_kib, int(g.maximum_kib * settings.step / 100))


def _step_kib(guests: Sequence[GuestMemory], settings: Settings) -> int:
    return sum(_limit_kib(g, settings) for g in guests)


def _size(kib: int) -> str:
    return f"{kib / MIB:.0f} MiB" if kib < 10 * MIB * MIB else f"{kib / MIB / MIB:.1f} GiB"


class MemoryTuner:
    """The tuner: a round of :func:`plan` over the guests with ``memory.balloon:
    auto``, from the newest sample. Settings (``serve --set``): ``memory.target``
    (80), ``memory.stall`` (10), ``memory.step`` (5)."""

    name = "memory"
    description = "Move memory between guests with balloon: auto, by need, within their floors."
    #: Each round's plan already waits for need (the target, its hysteresis):
    #: a move is made when proposed, a guest's balloon at most every 15 s.
    confirm = 1
    dwell = 15.0
    groups = frozenset({"balloon", MEMORY_NOW})

    def decide(self, context: Context) -> list[Action]:
        newest = context.window[-1] if context.window else None
        if newest is None or newest.host_memory is None:
            return []
        settings = settings_from(context.settings)
        guests = []
        for name, policy in sorted(context.policies.items()):
            g = newest.guests.get(name)
            memory = policy.memory
            if memory.balloon != "auto" or g is None or not g.running:
                continue
            if g.memory_kib is None or g.memory_max_kib is None:
                continue  # no balloon figures: nothing to move
            swap_in, faults = g.guest_swap_in_rate or 0.0, g.guest_major_fault_rate or 0.0
            free = g.usable_kib if g.usable_kib is not None else g.unused_kib
            short = free is not None and free < g.memory_kib * USABLE_LOW
            guests.append(
                GuestMemory(
                    name,
                    g.memory_kib,
                    g.memory_max_kib,
                    min(memory.floor_kib or 0, g.memory_max_kib),
                    memory.weight or 100,
                    free,
                    swap_in > SWAP_IN_KIB_S or faults > MAJOR_FAULTS_S or short,
                )
            )
        before = {g.name: g.actual_kib for g in guests}
        return [
            Action(
                self.name,
                m.guest,
                "balloon",
                m.target_kib,
                f"{_size(before[m.guest])} -> {_size(m.target_kib)}: {m.reason}",
                urgent=m.urgent,
            )
            for m in plan(newest.host_memory, guests, settings)
            if m.target_kib is not None
        ]
