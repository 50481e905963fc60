"""``balance``: spread busy vCPUs over the least busy host CPUs.

For guests whose policy says ``cpu.vcpus: auto``, each vCPU is pinned to one
host CPU within ``cpu.allowed``. A vCPU not yet on a single CPU is placed on
the least loaded allowed CPU, busiest first. Then, while the busiest host
CPU holds a movable vCPU whose move to the least loaded allowed CPU lowers
the peak by at least ``threshold`` percentage points, it is moved: one vCPU
at a time, the largest that helps, so few move. A vCPU moved less than
``dwell`` seconds ago stays.

Load of a host CPU: what the vCPUs placed on it used over the window, plus
what the host saw beyond the auto vCPUs (other guests, the host itself).

Settings: ``threshold`` (10), ``dwell`` (60 s), ``max_moves`` (8 per decision).
"""

from __future__ import annotations

from virtpolicy.engine.policies import Action, Context
from virtpolicy.policy.cpuset import parse_cpuset
from virtpolicy.policy.model import AUTO

Vcpus = dict[tuple[str, int], tuple[float, frozenset[int]]]  # (guest, vcpu) -> load, allowed


class Balance:
    name = "balance"
    description = "Re-pin busy vCPUs of vcpus: auto guests onto the least busy host CPUs."

    def decide(self, context: Context) -> list[Action]:
        vcpus = _movable(context)
        if not vcpus:
            return []
        load, placed = _loads(context, vcpus)
        actions = self._place(vcpus, load, placed)
        return actions + self._rebalance(context, vcpus, load, placed)

    def _place(
        self, vcpus: Vcpus, load: list[float], placed: dict[tuple[str, int], int]
    ) -> list[Action]:
        """vCPUs not on one CPU yet go to the least loaded allowed CPU, busiest first."""
        actions = []
        for key in sorted((k for k in vcpus if k not in placed), key=lambda k: -vcpus[k][0]):
            vload, allowed = vcpus[key]
            cpu = min(sorted(allowed), key=lambda c: load[c])
            actions.append(
                Action(
                    self.name,
                    key[0],
                    "vcpupin",
                    str(cpu),
                    f"placed on the least loaded allowed CPU {cpu} "
                    f"({load[cpu]:.0f} % before, vCPU at {vload:.0f} %)",
                    vcpu=key[1],
                )
            )
            load[cpu] += vload
            placed[key] = cpu
        return actions

    def _rebalance(
        self,
        context: Context,
        vcpus: Vcpus,
        load: list[float],
        placed: dict[tuple[str, int], int],
    ) -> list[Action]:
        """Move from the busiest CPU while that lowers the peak by ``threshold``."""
        threshold = context.setting("threshold", 10.0)
        max_moves = int(context.setting("max_moves", 8))
        actions: list[Action] = []
        while len(actions) < max_moves:
            peak = max(range(context.host_cpus), key=lambda c: load[c])
            best = _best_move(context, vcpus, load, placed, peak)
            if best is None or best[0] < threshold:
                break
            gain, key, target = best
            vload = vcpus[key][0]
            actions.append(
                Action(
                    self.name,
                    key[0],
                    "vcpupin",
                    str(target),
                    f"CPU {peak} was busiest at {load[peak]:.0f} %; moving this vCPU "
                    f"({vload:.0f} %) to CPU {target} ({load[target]:.0f} %) lowers the peak "
                    f"by {gain:.0f} points",
                    vcpu=key[1],
                    gain=gain,
                )
            )
            load[peak] -= vload
            load[target] += vload
            placed[key] = target
        return actions


def _movable(context: Context) -> Vcpus:
    """Running vCPUs of ``vcpus: auto`` guests, with their load and allowed CPUs."""
    every = frozenset(range(context.host_cpus))
    vcpus: Vcpus = {}
    latest = context.window[-1].guests if context.window else {}
    for guest, policy in context.policies.items():
        now = latest.get(guest)
        if policy.cpu.vcpus != AUTO or now is None or not now.running:
            continue
        allowed = every
        if policy.cpu.allowed:
            allowed = (frozenset(parse_cpuset(policy.cpu.allowed)) & every) or every
        for vcpu in range(len(now.vcpus)):
            vload = context.vcpu_load(guest, vcpu)
            vcpus[guest, vcpu] = (0.0 if vload is None else vload, allowed)
    return vcpus


def _loads(context: Context, vcpus: Vcpus) -> tuple[list[float], dict[tuple[str, int], int]]:
    """Each host CPU's load: the auto vCPUs placed on it (their windowed demand),
    plus what others put there: the CPU's busy share in the newest sample beyond
    what the auto vCPUs used there in that sample (so that it follows moves)."""
    every = frozenset(range(context.host_cpus))
    placed: dict[tuple[str, int], int] = {}
    load = [0.0] * context.host_cpus
    ours_now = [0.0] * context.host_cpus
    latest = context.window[-1]
    for key, (vload, _allowed) in vcpus.items():
        pin = context.pins.get(key, every)
        if len(pin) == 1:
            (cpu,) = pin
            placed[key] = cpu
            load[cpu] += vload
        used = latest.guests[key[0]].vcpus[key[1]].percent or 0.0
        for cpu in pin:
            if cpu < context.host_cpus:
                ours_now[cpu] += used / len(pin)
    for cpu, busy in enumerate(latest.host_busy_percent[: context.host_cpus]):
        load[cpu] += max(0.0, (busy or 0.0) - ours_now[cpu])
    return load, placed


def _best_move(
    context: Context,
    vcpus: Vcpus,
    load: list[float],
    placed: dict[tuple[str, int], int],
    peak: int,
) -> tuple[float, tuple[str, int], int] | None:
    """(gain, vCPU, target) of the movable vCPU on ``peak`` that lowers the peak most."""
    dwell = context.setting("dwell", 60.0)
    others = sorted(load[c] for c in range(context.host_cpus) if c != peak)
    best: tuple[float, tuple[str, int], int] | None = None
    for key, cpu in placed.items():
        if cpu != peak:
            continue
        moved = context.moved_at.get((key[0], "vcpupin", key[1]))
        if moved is not None and context.now - moved < dwell:
            continue
        vload, allowed = vcpus[key]
        target = min(sorted(allowed - {peak}), key=lambda c: load[c], default=None)
        if target is None:
            continue
        # The peak after the move: the larger of the two CPUs, or the next busiest.
        rest = (
            others[-1] if others[-1] != load[target] else (others[-2] if len(others) > 1 else 0.0)
        )
        new_peak = max(load[peak] - vload, load[target] + vload, rest)
        gain = load[peak] - new_peak
        if best is None or gain > best[0]:
            best = (gain, key, target)
    return best
