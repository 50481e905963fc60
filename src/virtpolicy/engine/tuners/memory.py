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

from collections.abc import Sequence
from dataclasses import dataclass

MIB = 1024  # KiB


@dataclass(frozen=True, slots=True)
class HostMemory:
    """The host's memory now, in KiB; ``stall``: PSI ``some avg10`` (%)."""

    total_kib: int
    available_kib: int
    stall: float | None = None

    @property
    def used_percent(self) -> float:
        return 100.0 * (self.total_kib - self.available_kib) / self.total_kib


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
                )
            )
    calm = [g for g in known if not g.distress and g.actual_kib >= g.floor_kib]
    used = host.used_percent
    stalled = host.stall is not None and host.stall >= settings.stall
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
