"""A trace-driven stand-in for a host: a TEST AND BENCHMARK HARNESS, not a driver.

It plays the sampler's role for tuners, so that a policy can be run
over an hour of load in seconds: N host CPUs, guests whose vCPUs each demand
a share of a CPU over time (from a seeded generator or a CSV file), and the
pinning and caps that policies set. Each step gives the :class:`Rates` the
sampler would have derived, under a simple contention model: a vCPU pinned
to several CPUs spreads its demand evenly over them; a CPU asked for more
than 100 % gives each its proportional part; a cap scales a guest down;
what a vCPU asked for and did not get is its steal.
"""

from __future__ import annotations

import csv
import math
import random
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from virtpolicy.engine.tuners import Action
from virtpolicy.engine.tuners.monitor import GuestRates, Rates
from virtpolicy.engine.tuners.run import Decision, Tuners
from virtpolicy.policy.model import GuestPolicy
from virtpolicy.policy.topology import Topology

#: (guest, vCPU) -> demand in % of one host CPU, one value per step.
Traces = dict[tuple[str, int], list[float]]


def generate(guests: int, vcpus: int, steps: int, seed: int, bursts: float = 0.002) -> Traces:
    """Seeded loads: per vCPU a base level (2 to 60 %), a slow wave with its own
    period (5 to 60 minutes at 5 s steps) and phase, noise, and now and then
    (``bursts``: the chance per step) a burst at 95 % for 30 s to 5 minutes."""
    rng = random.Random(seed)
    traces: Traces = {}
    for g in range(guests):
        for v in range(vcpus):
            base = rng.choice((2.0, 5.0, 10.0, 20.0, 40.0, 60.0))
            amp = base * rng.uniform(0.0, 0.8)
            period = rng.uniform(60, 720)
            phase = rng.uniform(0, 2 * math.pi)
            series = []
            burst = 0
            for t in range(steps):
                if burst == 0 and rng.random() < bursts:
                    burst = rng.randint(6, 60)
                level = 95.0 if burst else base + amp * math.sin(2 * math.pi * t / period + phase)
                burst = max(0, burst - 1)
                series.append(min(100.0, max(0.0, level + rng.gauss(0, 2))))
            traces[f"g{g:04d}", v] = series
    return traces


def from_csv(path: Path) -> Traces:
    """Traces from ``step,guest,vcpu,percent`` rows (a header line is allowed)."""
    traces: Traces = {}
    with path.open(newline="") as f:
        for row in csv.reader(f):
            if not row or row[0] == "step":
                continue
            step, guest, vcpu, percent = int(row[0]), row[1], int(row[2]), float(row[3])
            series = traces.setdefault((guest, vcpu), [])
            series.extend([0.0] * (step + 1 - len(series)))
            series[step] = percent
    return traces


@dataclass
class SimulatedHypervisor:
    """Plays the traces; policies' actions change its pinning and caps."""

    cpus: int
    traces: Traces
    interval: float = 5.0
    step: int = 0
    pins: dict[tuple[str, int], frozenset[int]] = field(default_factory=dict)
    caps: dict[str, int | None] = field(default_factory=dict)
    moves: int = 0

    def __post_init__(self) -> None:
        every = frozenset(range(self.cpus))
        for key in self.traces:
            self.pins.setdefault(key, every)
        self._vcpus_of: dict[str, list[int]] = {}
        for guest, vcpu in sorted(self.traces):
            self._vcpus_of.setdefault(guest, []).append(vcpu)

    @property
    def steps(self) -> int:
        return max((len(s) for s in self.traces.values()), default=0)

    def demand(self, key: tuple[str, int], step: int | None = None) -> float:
        """What the vCPU asks for at ``step`` (default: the coming one)."""
        step = self.step if step is None else step
        series = self.traces[key]
        return series[step] if 0 <= step < len(series) else 0.0

    def cpu_demand(self, step: int | None = None) -> list[float]:
        """What is asked of each host CPU at ``step`` under today's pinning,
        before contention (default: the coming step)."""
        asked = [0.0] * self.cpus
        for key, pin in self.pins.items():
            share = self.demand(key, step) / len(pin)
            for cpu in pin:
                asked[cpu] += share
        return asked

    def lower_bound(self, step: int | None = None) -> float:
        """No placement can do better than max(mean load, largest single vCPU)."""
        demands = [self.demand(k, step) for k in self.traces]
        return max(sum(demands) / self.cpus, max(demands, default=0.0))

    def advance(self) -> Rates:
        """One interval: the rates the sampler would see; then the next step."""
        asked = self.cpu_demand()
        got: dict[tuple[str, int], float] = {}
        for key, pin in self.pins.items():
            share = self.demand(key) / len(pin)
            got[key] = sum(share * min(1.0, 100.0 / asked[c]) if asked[c] else 0.0 for c in pin)
        guests = {}
        for guest, vcpus in self._vcpus_of.items():
            total = sum(got[guest, v] for v in vcpus)
            cap = self.caps.get(guest)
            scale = min(1.0, cap / total) if cap is not None and total > 0 else 1.0
            used = tuple(got[guest, v] * scale for v in vcpus)
            wants = [self.demand((guest, v)) for v in vcpus]
            steal = tuple(max(0.0, w - u) for w, u in zip(wants, used, strict=True))
            guests[guest] = GuestRates(
                guest, True, total * scale, used, steal, (None,) * len(vcpus),
                None, None, None, None,
            )  # fmt: skip
        busy = tuple(min(100.0, a) for a in asked)
        now = self.step * self.interval
        self.step += 1
        return Rates(now, self.interval, guests, busy)

    def apply(self, action: Action) -> None:
        if action.kind == "vcpupin" and action.vcpu is not None:
            key = (action.guest, action.vcpu)
            cpus = action.cpus
            if cpus != self.pins.get(key):
                self.pins[key] = cpus
                self.moves += 1
        elif action.kind == "cap":
            self.caps[action.guest] = action.cap


def play(
    hypervisor: SimulatedHypervisor,
    tuners: Tuners,
    policies: Mapping[str, GuestPolicy],
    steps: int,
    history: int = 720,
    layout: Topology | None = None,
    pools: Mapping[str, frozenset[int]] | None = None,
) -> list[Decision]:
    """Run ``tuners`` over ``steps`` intervals of ``hypervisor`` (its CPUs laid out
    as ``layout``, the guests' shared ``pools`` as placed); every decision made.

    The tuners' clock must be the simulation's (see :func:`clock_of`).
    """
    window: deque[Rates] = deque(maxlen=history)
    decisions = []
    hv = hypervisor
    for _ in range(steps):
        window.append(hv.advance())
        decisions += tuners.run(
            window, policies, hv.cpus, hv.pins, hv.caps, hv.apply, layout, pools
        )
    return decisions


def clock_of(hypervisor: SimulatedHypervisor) -> Callable[[], float]:
    """The simulated time: the end of the last interval played."""
    return lambda: hypervisor.step * hypervisor.interval
