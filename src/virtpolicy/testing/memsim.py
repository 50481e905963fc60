"""A trace-driven host for memory policies: a TEST AND BENCHMARK HARNESS.

Guests whose working set follows a trace (idle, steady, bursts, a slow leak),
on a host overcommitted by their defined memory, step by step (5 s). A
policy sets each guest's balloon; the host then counts what the issue of
memory policy measures:

- **guest-seconds in distress**: the guest's working set is above the memory
  it has (its balloon), so it swaps or reclaims what it uses;
- **host-seconds above 95 % in use**;
- **memory handed back** to the host by balloons (defined less balloon), GiB·h;
- **balloon changes** per hour.

The model, kept simple on purpose: a guest touches the memory its working set
needs, and its page cache fills the rest of its balloon over time; it keeps
what it touched (no free page reporting) until its balloon takes it back;
the host's memory in use is its own base plus what each guest holds, which is
what it touched, at most its balloon. What a guest's own balloon driver would
report: usable = balloon less working set. The host's memory stall (PSI) rises
from 90 % in use.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from dataclasses import dataclass, field

from virtpolicy.hypervisor.stats import HostMemory

GIB = 1024 * 1024  # KiB
STEP_S = 5.0
#: A guest's page cache grows by this share of its memory per step (full in
#: some 40 minutes), as a guest that reads files fills what it has.
CACHE_GROWTH = 0.002
KINDS = ("idle", "steady", "bursts", "leak")


def trace(kind: str, steps: int, rng: random.Random) -> list[float]:
    """A working set over ``steps``, as a share of the guest's defined memory."""
    series = []
    burst = 0
    base = {"idle": 0.1, "steady": 0.45, "bursts": 0.2, "leak": 0.2}[kind] * rng.uniform(0.8, 1.2)
    for t in range(steps):
        if kind == "leak":
            level = base + (0.9 - base) * t / steps
        elif kind == "bursts":
            if burst == 0 and rng.random() < 0.01:
                burst = rng.randint(12, 60)  # 1 to 5 minutes
            level = 0.85 if burst else base
            burst = max(0, burst - 1)
        else:
            level = base + 0.05 * math.sin(2 * math.pi * t / rng.uniform(120, 360))
        series.append(min(1.0, max(0.02, level + rng.gauss(0, 0.01))))
    return series


@dataclass
class SimGuest:
    name: str
    maximum_kib: int
    floor_kib: int
    ws: list[float]  # working set per step, share of maximum
    weight: int = 100
    actual_kib: int = 0  # the balloon
    touched_kib: int = 0  # what it holds of the host's memory

    def working_set(self, step: int) -> int:
        return int(self.ws[step] * self.maximum_kib)


@dataclass
class Outcome:
    distress_s: float = 0.0
    host_over_s: float = 0.0
    handed_back_gib_h: float = 0.0
    changes: int = 0
    hours: float = 0.0
    #: Per kind of working set (the last part of a guest's name): guest-seconds
    #: in distress and GiB·h handed back.
    by_kind: dict[str, list[float]] = field(default_factory=dict)

    @property
    def changes_per_hour(self) -> float:
        return self.changes / self.hours if self.hours else 0.0


@dataclass
class MemoryHost:
    total_kib: int
    base_kib: int
    guests: list[SimGuest]
    step: int = 0
    outcome: Outcome = field(default_factory=Outcome)

    @property
    def used_kib(self) -> int:
        return self.base_kib + sum(min(g.touched_kib, g.actual_kib) for g in self.guests)

    def host(self) -> HostMemory:
        used = self.used_kib
        percent = 100.0 * used / self.total_kib
        return HostMemory(
            self.total_kib, max(0, self.total_kib - used), max(0.0, (percent - 90) * 5)
        )

    def usable_kib(self, g: SimGuest) -> int:
        return max(0, g.actual_kib - g.working_set(self.step))

    def set_balloon(self, name: str, kib: int) -> None:
        g = next(g for g in self.guests if g.name == name)
        kib = max(1, min(g.maximum_kib, kib))
        if kib != g.actual_kib:
            g.actual_kib = kib
            g.touched_kib = min(g.touched_kib, kib)
            self.outcome.changes += 1

    def advance(self) -> None:
        """One step: guests touch their working set, and their page cache grows
        into the rest of what they have; the outcome counts."""
        for g in self.guests:
            ws = g.working_set(self.step)
            cached = g.touched_kib + int(g.maximum_kib * CACHE_GROWTH)
            g.touched_kib = min(g.actual_kib, max(ws, cached))
            kind = self.outcome.by_kind.setdefault(g.name.rpartition("-")[2], [0.0, 0.0])
            if ws > g.actual_kib:
                self.outcome.distress_s += STEP_S
                kind[0] += STEP_S
            back = (g.maximum_kib - g.actual_kib) / GIB * STEP_S / 3600
            self.outcome.handed_back_gib_h += back
            kind[1] += back
        if self.used_kib > 0.95 * self.total_kib:
            self.outcome.host_over_s += STEP_S
        self.outcome.hours += STEP_S / 3600
        self.step += 1


def host_of(
    seed: int, overcommit: float, guests: int = 16, steps: int = 720, total_gib: int = 64
) -> MemoryHost:
    """A seeded host: ``guests`` of each kind in turn, whose defined memory adds up
    to ``overcommit`` times what the host has for guests; each balloon full at
    the start, each floor an eighth of its guest's memory, its page cache
    starting empty."""
    rng = random.Random(seed)
    total, base = total_gib * GIB, 4 * GIB
    each = int((total - base) * overcommit / guests)
    made = [
        SimGuest(f"g{i:02d}-{KINDS[i % 4]}", each, each // 8, trace(KINDS[i % 4], steps, rng))
        for i in range(guests)
    ]
    for g in made:
        g.actual_kib = g.maximum_kib
        g.touched_kib = g.working_set(0)
    return MemoryHost(total, base, made)


#: A policy: called every step with the host; it sets balloons through it.
Policy = Callable[[MemoryHost], None]


def play(host: MemoryHost, policy: Policy, steps: int) -> Outcome:
    for _ in range(steps):
        policy(host)
        host.advance()
    return host.outcome
