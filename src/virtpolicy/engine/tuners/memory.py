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

import dataclasses
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from virtpolicy.engine.tuners import Action, Context
from virtpolicy.engine.tuners.monitor import GuestRates
from virtpolicy.hypervisor.stats import MEMORY_NOW, HostMemory

MIB = 1024  # KiB
#: A guest is in distress when its guest swaps in or faults pages in faster
#: than this (KiB/s, faults/s) over the last interval.
SWAP_IN_KIB_S = 64.0
MAJOR_FAULTS_S = 50.0
#: ... or when what it could still use is under this share of what it has,
#: and never under :data:`USABLE_LOW_KIB`: its OOM killer is next (a guest
#: without swap shows no other sign) ...
USABLE_LOW = 0.05
USABLE_LOW_KIB = 16 * 1024
#: ... or will be within this many samples at the pace it fell over the last
#: one, what its balloon took not counted (two samples, on the bench: 10-25 %
#: fewer guest-seconds in distress, and less memory handed back than MoM's
#: rules in two seeds of five at 1.5x).
LOOKAHEAD = 1
#: A guest with more than this share of its memory unused gives some back
#: even when the host does not need it.
IDLE = 0.3
#: How long after its distress a guest keeps what it was given (s).
RECOVERY_S = 30.0


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
    #: How much what it could use fell over the last interval (KiB): a guest in
    #: distress gets twice that back at once, so that it keeps up with its need.
    falling_kib: int = 0
    #: In distress a little while ago: what it was given is not taken back yet
    #: (its free memory is what it was just given for its need).
    recovering: bool = False


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
    margin: float = 6.0  # % of its memory a guest keeps free above its need
    critical: float = 95.0  # % in use from which taking back is urgent, in bigger steps


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
    given_kib = 0
    for g in (g for g in known if g.distress and g.actual_kib < g.maximum_kib):
        # A step at once (more when its need grows faster), and another each
        # round while it lasts: enough to end it, without filling the host for
        # a guest that needed less.
        step = max(_limit_kib(g, settings), 2 * g.falling_kib)
        give = min(g.maximum_kib, max(g.floor_kib, g.actual_kib + step))
        give -= g.actual_kib
        given_kib += give
        moves.append(
            Move(
                g.name,
                g.actual_kib + give,
                f"in distress (swapping in, faulting pages in or nearly out of memory): "
                f"{_size(give)} back at once",
                urgent=True,
            )
        )
    calm = [g for g in known if not g.distress and g.actual_kib >= g.floor_kib]
    used = host.used_percent
    stalled = _stalled(host, settings)
    # Under pressure each guest keeps less free above its need (down to 80 %
    # of the margin): the host's need first, short of a guest's distress.
    tight = min(1.0, max(0.6, (100 - used) / max(1.0, 100 - settings.target)))
    settings = dataclasses.replace(settings, margin=settings.margin * tight)
    if used > settings.target or stalled:
        over_kib = int((used - settings.target) / 100 * host.total_kib) + given_kib
        need_kib = max(over_kib, _step_kib(calm, settings) if stalled else 0)
        why = (
            f"the host is at {used:.0f} % in use (target {settings.target:.0f} %)"
            if used > settings.target
            else f"the host stalls for memory ({host.stall:.0f} % of the time)"
        )
        if used >= settings.critical:  # the host is about to swap: every round, faster
            critical = dataclasses.replace(settings, step=settings.step * 3)
            moves += _take(calm, need_kib, why, critical, urgent=True)
        else:
            moves += _take(calm, need_kib, why, settings)
    else:
        if used < settings.target - settings.hysteresis and not stalled:
            room_kib = int((settings.target - used) / 100 * host.total_kib) - given_kib
            moves += _give(calm, room_kib, used, settings)
        moves += _idle(calm, settings)
    return moves


def _idle(guests: Sequence[GuestMemory], settings: Settings) -> list[Move]:
    """Without the host's need, a step back from each guest that leaves much of
    its memory unused (over :data:`IDLE` of it): held by a guest, it would only
    become cache the host cannot have back without a balloon."""
    moves = []
    for g in guests:
        room = _room_kib(g, settings)
        if g.recovering:
            continue
        if (g.free_kib or 0) > g.actual_kib * IDLE and room >= settings.min_step_kib:
            take = min(room, _limit_kib(g, settings))
            moves.append(
                Move(
                    g.name,
                    g.actual_kib - take,
                    f"{(g.free_kib or 0) * 100 // max(1, g.actual_kib)} % of its memory unused: "
                    f"{_size(take)} back to the host",
                )
            )
    return moves


#: Each setting's bounds: a value outside them stops the memory tuner (and
#: KSM's control), saying why; the CPU tuners and enforcement go on.
BOUNDS = {"memory.target": (1.0, 100.0), "memory.stall": (0.1, 100.0), "memory.step": (0.5, 100.0)}


def settings_from(given: Mapping[str, Any]) -> Settings:
    """The memory tuner's settings from the tuners' (``memory.target``, ...);
    ValueError naming the setting and its value when one is out of bounds."""
    default = Settings()
    found = {}
    for name, (low, high) in BOUNDS.items():
        value = given.get(name, getattr(default, name.removeprefix("memory.")))
        try:
            number = float(value)
        except (TypeError, ValueError):
            number = math.nan
        if not low <= number <= high:  # NaN too
            raise ValueError(f"{name}: {value!r} is not a number from {low:g} to {high:g}")
        found[name.removeprefix("memory.")] = number
    return Settings(target=found["target"], stall=found["stall"], step=found["step"])


def needs_memory(host: HostMemory, settings: Settings) -> bool:
    """Whether the host needs memory back: over its target, or stalling."""
    return host.used_percent > settings.target or _stalled(host, settings)


def _stalled(host: HostMemory, settings: Settings) -> bool:
    return host.stall is not None and host.stall >= settings.stall


def _take(
    guests: Sequence[GuestMemory],
    need_kib: int,
    why: str,
    settings: Settings,
    *,
    urgent: bool = False,
) -> list[Move]:
    """Take ``need_kib`` from the guests with the most room, by weight."""
    room = {g.name: _room_kib(g, settings) for g in guests}
    able = [g for g in guests if room[g.name] >= settings.min_step_kib and not g.recovering]
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
                urgent=urgent,
            )
        )
    return moves


def _give(
    guests: Sequence[GuestMemory], room_kib: int, used: float, settings: Settings
) -> list[Move]:
    """Give back up to ``room_kib`` to the guests near their need (less than twice
    the margin free), the nearest first: a guest with memory to spare would only
    fill it with cache, which the host then holds for nothing."""
    moves = []
    near = [g for g in guests if (g.free_kib or 0) < 2 * g.actual_kib * settings.margin / 100]
    for g in sorted(near, key=lambda g: (_room_kib(g, settings), g.name)):
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

    def __init__(self) -> None:
        #: Why a guest with balloon: auto is left as it is (its status shows it).
        self.notes: dict[str, str] = {}

    def decide(self, context: Context) -> list[Action]:
        self.notes = {}
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
                self.notes[name] = "no balloon figures (no balloon device?): left as it is"
                continue
            if g.job:  # a migration's source: libvirt refuses other jobs until it ends
                self.notes[name] = f"libvirt's {g.job} job runs: left as it is until it ends"
                continue
            if g.hugepages:
                self.notes[name] = (
                    "huge pages back its memory, which a balloon cannot free: left as it is"
                )
                continue
            floor = memory.floor_kib or 0
            if floor > g.memory_max_kib:
                self.notes[name] = (
                    f"memory.floor {memory.floor} is above its defined memory "
                    f"({_size(g.memory_max_kib)}): kept at its defined memory"
                )
            free = _usable(g)
            previous = context.window[-2].guests.get(name) if len(context.window) > 1 else None
            falling = _falling(g, previous)
            paging = (g.guest_swap_in_rate or 0.0) > SWAP_IN_KIB_S or (
                g.guest_major_fault_rate or 0.0
            ) > MAJOR_FAULTS_S
            guests.append(
                GuestMemory(
                    name,
                    g.memory_kib,
                    g.memory_max_kib,
                    min(memory.floor_kib or 0, g.memory_max_kib),
                    memory.weight or 100,
                    free,
                    paging or running_out(g.memory_kib, free, falling),
                    falling,
                    _recovering(context, name),
                )
            )
        before = {g.name: g.actual_kib for g in guests}
        moves = plan(newest.host_memory, guests, settings)
        self.notes.update((m.guest, m.reason) for m in moves if m.target_kib is None)
        return [
            Action(
                self.name,
                m.guest,
                "balloon",
                m.target_kib,
                f"{_size(before[m.guest])} -> {_size(m.target_kib)}: {m.reason}",
                urgent=m.urgent,
            )
            for m in moves
            if m.target_kib is not None
        ]


def running_out(actual_kib: int, free_kib: int | None, falling_kib: int) -> bool:
    """Whether a guest is (about to be) out of memory: what it could use is
    under :data:`USABLE_LOW` of what it has (at least :data:`USABLE_LOW_KIB`),
    or will be within :data:`LOOKAHEAD` samples at the pace it fell over the
    last one (a guest filling its memory fast would meet its OOM killer before
    a move made once it is short could reach it)."""
    if free_kib is None:
        return False
    low = max(actual_kib * USABLE_LOW, USABLE_LOW_KIB)
    return free_kib - LOOKAHEAD * falling_kib < low


def _recovering(context: Context, name: str) -> bool:
    """Whether the guest ran short (or was about to) in the last :data:`RECOVERY_S`
    seconds before the newest sample."""
    window = context.window
    newest = window[-1].wall
    for i in range(len(window) - 2, 0, -1):
        if newest - window[i].wall > RECOVERY_S:
            break
        now, before = window[i].guests.get(name), window[i - 1].guests.get(name)
        if now is None or now.memory_kib is None:
            continue
        if running_out(now.memory_kib, _usable(now), _falling(now, before)):
            return True
    return False


def _falling(now: GuestRates, before: GuestRates | None) -> int:
    """How much what the guest could use fell over the interval, less what its
    balloon took meanwhile (a guest whose balloon grows is not filling up): as
    its balloon driver says both, in the same report (libvirt's figure of the
    balloon follows QEMU's events, and may be a sample behind the guest's)."""
    free, was = _usable(now), _usable(before)
    if free is None or was is None or before is None:
        return 0
    if now.available_kib is not None and before.available_kib is not None:
        return falling_kib(free, was, now.available_kib, before.available_kib)
    return falling_kib(free, was, now.memory_kib, before.memory_kib)


def falling_kib(free: int, was_free: int, actual: int | None, was_actual: int | None) -> int:
    """The fall of a guest's usable memory from ``was_free`` to ``free`` (KiB) that
    its balloon going from ``was_actual`` to ``actual`` does not explain."""
    taken = max(0, was_actual - actual) if actual is not None and was_actual is not None else 0
    return max(0, was_free - free - taken)


def _usable(g: GuestRates | None) -> int | None:
    if g is None:
        return None
    return g.usable_kib if g.usable_kib is not None else g.unused_kib
