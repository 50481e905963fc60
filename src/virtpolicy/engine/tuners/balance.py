"""``balance``: spread busy vCPUs over the least busy host CPUs.

For guests whose policy says ``cpu.vcpus: auto``, each vCPU is pinned to one
host CPU within ``cpu.allowed``. A vCPU not yet on a single CPU is placed on
the least loaded allowed CPU, busiest first. Then, busiest host CPU first,
one vCPU is moved from it to the least loaded CPU it is allowed on when that
lowers the busier of the two by at least ``threshold`` percentage points
(the vCPU that lowers it most: a move never makes the target busier than
the source was). A CPU with no such move is left; at most ``max_moves``
vCPUs move per decision, and a vCPU moved less than ``dwell`` seconds ago
stays.

Load of a vCPU: what it used plus its steal, averaged over the last
``estimate`` seconds. Load of a host CPU: its vCPUs' loads, plus what the
host saw there beyond the auto vCPUs (other guests, the host itself).

Settings: ``threshold`` (5 points), ``dwell`` (60 s), ``max_moves`` (32 per
decision), ``estimate`` (10 s).

Where the host's layout is known, a vCPU moves only within its NUMA node
(where its memory is), and of two CPUs as loaded it takes the one whose core
siblings are idler: an idle core before a busy core's idle sibling (SMT
threads share a core's units: a CPU counts as loaded as itself plus half its
busiest sibling, for choosing). Where placement is in play, a vCPU stays
within its guest's shared pool (never on another guest's dedicated CPUs).

Its hysteresis is its own: the averaged load, the threshold and the dwell
time. So it asks the engine for no confirmation round (``confirm = 1``):
waiting one more sample lets the load move on, and a different vCPU may
be the best one to move by then (on the benchmark's trace, confirming
took the busiest CPU from 1.13 to 1.24 times the lower bound).
"""

from __future__ import annotations

import heapq
from collections.abc import Callable

from virtpolicy.engine.tuners import Action, Context
from virtpolicy.policy.cpuset import cpus_in
from virtpolicy.policy.model import AUTO
from virtpolicy.policy.topology import Topology

Vcpus = dict[tuple[str, int], tuple[float, frozenset[int]]]  # (guest, vcpu) -> load, allowed
Score = Callable[[int], float]  # host CPU -> how loaded it counts as, for choosing


class Balance:
    name = "balance"
    description = "Re-pin busy vCPUs of vcpus: auto guests onto the least busy host CPUs."
    confirm = 1

    def decide(self, context: Context) -> list[Action]:
        vcpus = _movable(context)
        if not vcpus:
            return []
        load, placed = _loads(context, vcpus)
        score = _scorer(context.layout, load)
        actions = self._place(vcpus, load, placed, score)
        return actions + self._rebalance(context, vcpus, load, placed, score)

    def _place(
        self,
        vcpus: Vcpus,
        load: list[float],
        placed: dict[tuple[str, int], int],
        score: Score,
    ) -> list[Action]:
        """vCPUs not on one CPU yet go to the least loaded allowed CPU, busiest first."""
        actions = []
        # Per allowed set, a heap of (score, cpu). Loads only grow here, so an
        # entry whose score is out of date is pushed back with the current one.
        heaps: dict[frozenset[int], list[tuple[float, int]]] = {}
        for key in sorted((k for k in vcpus if k not in placed), key=lambda k: -vcpus[k][0]):
            vload, allowed = vcpus[key]
            heap = heaps.get(allowed)
            if heap is None:
                heap = heaps[allowed] = [(score(c), c) for c in allowed]
                heapq.heapify(heap)
            while heap[0][0] != score(heap[0][1]):
                heapq.heapreplace(heap, (score(heap[0][1]), heap[0][1]))
            cpu = heap[0][1]
            actions.append(
                Action(
                    self.name,
                    key[0],
                    "vcpupin",
                    frozenset({cpu}),
                    f"placed on the least loaded allowed CPU {cpu} "
                    f"({load[cpu]:.0f} % before, vCPU at {vload:.0f} %)",
                    vcpu=key[1],
                )
            )
            load[cpu] += vload
            heapq.heapreplace(heap, (score(cpu), cpu))
            placed[key] = cpu
        return actions

    def _rebalance(
        self,
        context: Context,
        vcpus: Vcpus,
        load: list[float],
        placed: dict[tuple[str, int], int],
        score: Score,
    ) -> list[Action]:
        """Busiest CPU first: move the vCPU that lowers it most, if by ``threshold``."""
        threshold = context.setting("threshold", 5.0)
        max_moves = int(context.setting("max_moves", 32))
        dwell = context.setting("dwell", 60.0)
        on: dict[int, list[tuple[str, int]]] = {}
        for key, cpu in placed.items():
            moved = context.moved_at.get((key[0], "vcpupin", key[1]))
            if moved is None or context.now - moved >= dwell:
                on.setdefault(cpu, []).append(key)
        actions: list[Action] = []
        # Each CPU is looked at once, busiest first; a move only lowers the
        # source and raises a CPU that stays below it, so the order holds.
        for peak in sorted(on, key=lambda c: -load[c]):
            if len(actions) >= max_moves:
                break
            near = _node_cpus(context.layout, peak)
            best = _best_move(vcpus, load, on[peak], peak, score, near)
            if best is None or best[0] < threshold:
                continue
            gain, key, target = best
            vload = vcpus[key][0]
            actions.append(
                Action(
                    self.name,
                    key[0],
                    "vcpupin",
                    frozenset({target}),
                    f"CPU {peak} was at {load[peak]:.0f} %; moving this vCPU ({vload:.0f} %) "
                    f"to CPU {target} ({load[target]:.0f} %) lowers the peak of the two "
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
    newest = context.window[-1].wall if context.window else 0.0
    since = newest - context.setting("estimate", 10.0)
    for guest, policy in context.policies.items():
        now = latest.get(guest)
        if policy.cpu.vcpus != AUTO or now is None or not now.running:
            continue
        allowed = every
        if policy.cpu.allowed:
            allowed = (cpus_in(policy.cpu.allowed) & every) or every
        pool = context.pools.get(guest)
        if pool:  # placement is in play: its shared pool, within its nodes
            allowed = (allowed & pool) or pool
        loads = context.vcpu_loads(guest, since)
        for vcpu in range(len(now.vcpu_percent)):
            vload = loads[vcpu] if vcpu < len(loads) else None
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
        used = latest.guests[key[0]].vcpu_percent[key[1]] or 0.0
        for cpu in pin:
            if cpu < context.host_cpus:
                ours_now[cpu] += used / len(pin)
    for cpu, busy in enumerate(latest.host_busy_percent[: context.host_cpus]):
        load[cpu] += max(0.0, (busy or 0.0) - ours_now[cpu])
    return load, placed


def _best_move(
    vcpus: Vcpus,
    load: list[float],
    keys: list[tuple[str, int]],
    peak: int,
    score: Score,
    near: frozenset[int] | None,
) -> tuple[float, tuple[str, int], int] | None:
    """(gain, vCPU, target) of the vCPU in ``keys`` (all on ``peak``) whose move to
    the least loaded CPU it may use (within ``near``, the peak's node, if known)
    lowers max(peak, target) most."""
    targets: dict[frozenset[int], int | None] = {}
    best: tuple[float, tuple[str, int], int] | None = None
    for key in keys:
        vload, allowed = vcpus[key]
        if allowed not in targets:
            room = allowed & near if near is not None else allowed
            targets[allowed] = min(
                (c for c in room if c != peak), key=lambda c: (score(c), c), default=None
            )
        target = targets[allowed]
        if target is None:
            continue
        gain = min(vload, load[peak] - load[target] - vload)
        if best is None or gain > best[0]:
            best = (gain, key, target)
    return best


def _scorer(layout: Topology | None, load: list[float]) -> Score:
    """How loaded a CPU counts as, for choosing a target: its load, plus half its
    busiest sibling's where the layout is known (reads ``load`` as it changes)."""
    if layout is None or layout.smt < 2:
        return lambda c: load[c]
    known = {cpu.id for cpu in layout.cpus}
    others = {
        c: [s for s in layout.siblings(c) if s != c and s < len(load)]
        for c in range(len(load))
        if c in known
    }
    return lambda c: load[c] + 0.5 * max((load[s] for s in others.get(c, ())), default=0.0)


def _node_cpus(layout: Topology | None, cpu: int) -> frozenset[int] | None:
    """The CPUs of ``cpu``'s NUMA node (None: the layout is not known)."""
    if layout is None:
        return None
    try:
        return layout.node_cpus(layout.cpu(cpu).node)
    except KeyError:
        return None
