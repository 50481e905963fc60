"""Tuners (dynamic policies): pluggable functions from utilization to proposed actions.

A tuner is an object with a ``name``, a one-line ``description``
and ``decide(context) -> list[Action]``. It is a pure function of what the
:class:`Context` holds: the recent statistics, the stored policies, the host
topology, the current tuning, and when each vCPU was last moved. It changes
nothing; :mod:`virtpolicy.engine.tuners.run` applies what it proposes, with
rate limits and hysteresis, and logs every decision.

Tuners are found through the entry-point group ``virtpolicy.tuners``
(each entry point names a class or a factory that takes no arguments);
the built-in ones are registered there too, by this package's own metadata.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from typing import Any, Literal, Protocol, runtime_checkable

from virtpolicy.engine.tuners.monitor import Rates
from virtpolicy.errors import ConfigError
from virtpolicy.policy.model import GuestPolicy
from virtpolicy.policy.topology import Topology

GROUP = "virtpolicy.tuners"

#: (guest, vCPU) -> the host CPUs it may run on now.
Pins = Mapping[tuple[str, int], frozenset[int]]


@dataclass(frozen=True, slots=True)
class Action:
    """A proposed change. ``kind`` "vcpupin": pin ``vcpu`` of ``guest`` to the
    host CPUs ``value`` (a frozenset); "cap": cap ``guest`` at ``value`` % of
    one host CPU (None: lift the cap); "balloon": set ``guest``'s balloon to
    ``value`` KiB. ``urgent``: applied at once, not held back by confirmation or
    the dwell (a guest in distress)."""

    tuner: str
    guest: str
    kind: Literal["vcpupin", "cap", "balloon"]
    value: frozenset[int] | int | None
    reason: str
    vcpu: int | None = None
    gain: float = 0.0  # how much better the tuner expects things to get
    urgent: bool = False

    @property
    def cpus(self) -> frozenset[int]:
        """The target of a "vcpupin" (empty for any other kind)."""
        return self.value if isinstance(self.value, frozenset) else frozenset()

    @property
    def cap(self) -> int | None:
        """The target of a "cap" (None: lift it, or not a cap)."""
        return self.value if isinstance(self.value, int) else None

    @property
    def key(self) -> tuple[str, str, int | None]:
        """What the action changes: the rate limit and hysteresis are per key."""
        return (self.guest, self.kind, self.vcpu)


@dataclass(frozen=True, slots=True)
class Context:
    """What a tuner decides from."""

    now: float
    window: Sequence[Rates]  # oldest first; the newest is the last sample
    policies: Mapping[str, GuestPolicy]
    host_cpus: int
    pins: Pins
    caps: Mapping[str, int | None]  # current cap in % of one host CPU, None: none
    moved_at: Mapping[tuple[str, str, int | None], float] = field(default_factory=dict)
    settings: Mapping[str, Any] = field(default_factory=dict)
    #: The host's NUMA nodes, cores and threads (None: not known).
    layout: Topology | None = None
    #: Where placement is in play: each shared guest's CPUs (its shared pool,
    #: within its NUMA nodes). A tuner keeps its vCPUs there.
    pools: Mapping[str, frozenset[int]] = field(default_factory=dict)

    def setting(self, name: str, default: float) -> float:
        return float(self.settings.get(name, default))

    def vcpu_load(self, guest: str, vcpu: int, since: float = -math.inf) -> float | None:
        """Mean % of one host CPU the vCPU asked for over the window (the samples
        after ``since``): what it used plus its steal (runnable, but waiting for a
        host CPU). None: no data."""
        loads = self.vcpu_loads(guest, since)
        return loads[vcpu] if vcpu < len(loads) else None

    def vcpu_loads(self, guest: str, since: float = -math.inf) -> list[float | None]:
        """:meth:`vcpu_load` of each of the guest's vCPUs (as many as it has now)."""
        sums: list[float] = []
        counts: list[int] = []
        for r in reversed(self.window):
            if r.wall <= since:
                break
            g = r.guests.get(guest)
            if g is None:
                continue
            used, steal = g.vcpu_percent, g.vcpu_steal_percent
            if len(used) > len(sums):
                sums += [0.0] * (len(used) - len(sums))
                counts += [0] * (len(used) - len(counts))
            for i, u in enumerate(used):
                if u is not None and not math.isnan(u):
                    sums[i] += u + (steal[i] or 0.0)
                    counts[i] += 1
        return [s / c if c else None for s, c in zip(sums, counts, strict=True)]

    def guest_load(self, guest: str) -> float | None:
        values = [
            g.cpu_percent
            for r in self.window
            if (g := r.guests.get(guest)) and g.cpu_percent is not None
        ]
        return sum(values) / len(values) if values else None

    def host_busy(self) -> float | None:
        """Mean busy % over every host CPU and the window."""
        values = [b for r in self.window for b in r.host_busy_percent if b is not None]
        return sum(values) / len(values) if values else None

    def cpu_busy(self) -> list[float]:
        """Mean busy % of each host CPU over the window (0 where unknown)."""
        sums = [0.0] * self.host_cpus
        counts = [0] * self.host_cpus
        for r in self.window:
            for cpu, b in enumerate(r.host_busy_percent[: self.host_cpus]):
                if b is not None:
                    sums[cpu] += b
                    counts[cpu] += 1
        return [s / c if c else 0.0 for s, c in zip(sums, counts, strict=True)]


@runtime_checkable
class Tuner(Protocol):
    name: str
    description: str

    def decide(self, context: Context) -> list[Action]: ...


def available() -> dict[str, str]:
    """Every tuner installed: name -> where it comes from (``module:attr``)."""
    return {ep.name: ep.value for ep in entry_points(group=GROUP)}


def load(names: Sequence[str]) -> list[Tuner]:
    """The named tuners, made; ConfigError naming one that is not installed."""
    found = {ep.name: ep for ep in entry_points(group=GROUP)}
    tuners = []
    for name in names:
        if name not in found:
            known = ", ".join(sorted(found)) or "none"
            raise ConfigError(f'tuner: "{name}" is not an installed tuner (installed: {known})')
        made = found[name].load()()
        if not isinstance(made, Tuner):
            raise ConfigError(f'tuner: "{name}" ({found[name].value}) has no decide()')
        tuners.append(made)
    return tuners
