"""``balance`` on a simulated host: quality, decision time, and how many vCPUs move.

Run: .venv/bin/python bench/bench_balance.py [--guests 1000] [--vcpus 4] [--cpus 128]
     [--steps 720] [--seed 1] [--bursts 0.002] [--scale 1]
     [--set KEY=NUMBER ...]

The simulated host (virtpolicy.testing.simulate) plays seeded
per-vCPU load traces of an hour at 5 s steps; every guest has ``vcpus: auto``.
After every sample the tuners runs ``balance`` with its defaults
(``--set`` changes a setting: threshold, dwell, max_moves, estimate, window,
confirm).

Reported, each step after the first minute:
- the busiest host CPU's load divided by the lower bound max(mean load,
  largest single vCPU load), measured two ways: on the next sample (what
  the guests ask for in the 5 s after the decision: the figure that counts)
  and on the sample the decision was made from (how well the policy did with
  what it could know; the difference is the load's own change in 5 s);
- decision time: one engine round (every policy's decide), median and max;
- vCPU moves per hour (not counting the first placement), against a naive
  re-balancer that re-packs every vCPU from scratch at each step (largest
  first onto the least loaded CPU) from the same estimate of each vCPU's load.

Nothing is asserted.
"""

from __future__ import annotations

import argparse
import heapq
import os
import platform
import statistics
import time
from collections import deque

from virtpolicy.engine.tuners import Context
from virtpolicy.engine.tuners.balance import Balance
from virtpolicy.engine.tuners.monitor import Rates
from virtpolicy.engine.tuners.run import Tuners
from virtpolicy.policy.model import parse_policy
from virtpolicy.testing.simulate import SimulatedHypervisor, clock_of, generate


def naive_pack(
    context: Context, keys: list[tuple[str, int]], since: float
) -> dict[tuple[str, int], int]:
    """Longest processing time first: every vCPU, largest first, onto the least loaded CPU."""
    loads = sorted(((context.vcpu_load(g, v, since) or 0.0, (g, v)) for g, v in keys), reverse=True)
    heap = [(0.0, cpu) for cpu in range(context.host_cpus)]
    placement = {}
    for load, key in loads:
        total, cpu = heapq.heappop(heap)
        placement[key] = cpu
        heapq.heappush(heap, (total + load, cpu))
    return placement


def peak_ratio(host: SimulatedHypervisor, step: int | None = None) -> float:
    return max(host.cpu_demand(step)) / host.lower_bound(step)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--guests", type=int, default=1000)
    parser.add_argument("--vcpus", type=int, default=4)
    parser.add_argument("--cpus", type=int, default=128)
    parser.add_argument("--steps", type=int, default=720)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--bursts", type=float, default=0.002, help="chance per vCPU per step that a burst starts"
    )
    parser.add_argument(
        "--scale", type=float, default=1.0, help="multiply every load (at most 100 %%)"
    )
    parser.add_argument("--set", action="append", default=[], metavar="KEY=NUMBER")
    args = parser.parse_args()
    settings = {k: float(v) for k, _, v in (s.partition("=") for s in args.set)}
    estimate = settings.get("estimate", 10.0)  # balance's default

    traces = generate(args.guests, args.vcpus, args.steps, args.seed, args.bursts)
    if args.scale != 1.0:
        traces = {k: [min(100.0, v * args.scale) for v in s] for k, s in traces.items()}
    guests = sorted({g for g, _ in traces})
    policies = {g: parse_policy({"guest": g, "cpu": {"vcpus": "auto"}}) for g in guests}
    keys = sorted(traces)

    host = SimulatedHypervisor(args.cpus, traces)
    engine = Tuners.from_settings([Balance()], settings, clock=clock_of(host))
    naive = SimulatedHypervisor(args.cpus, traces)
    naive_moves = 0
    window: deque[Rates] = deque(maxlen=13)
    naive_window: deque[Rates] = deque(maxlen=13)
    ratios, decided, naive_ratios, naive_decided, times = [], [], [], [], []
    placed_at_first = 0
    demand = sum(sum(s) for s in traces.values()) / args.steps / args.cpus
    for step in range(args.steps):
        if step >= 12:  # the coming sample, under the pinning decided so far
            ratios.append(peak_ratio(host))
            naive_ratios.append(peak_ratio(naive))
        window.append(host.advance())
        naive_window.append(naive.advance())
        engine.run(window, policies, host.cpus, host.pins, host.caps, host.apply)
        times.append(engine.decide_seconds)
        if step == 0:
            placed_at_first = host.moves
        context = Context(
            now=step * 5.0, window=naive_window, policies=policies, host_cpus=args.cpus,
            pins=naive.pins, caps={},
        )  # fmt: skip
        for key, cpu in naive_pack(context, keys, step * 5.0 - estimate).items():
            if naive.pins[key] != frozenset({cpu}):
                if len(naive.pins[key]) == 1:
                    naive_moves += 1
                naive.pins[key] = frozenset({cpu})
        if step >= 12:  # the sample just decided from, under the new pinning
            decided.append(peak_ratio(host, step))
            naive_decided.append(peak_ratio(naive, step))

    report(args, settings, demand, (ratios, naive_ratios), (decided, naive_decided), times)
    hours = args.steps * 5 / 3600
    print(
        f"| vCPU moves per hour (after the first placement of {placed_at_first}) | "
        f"{(host.moves - placed_at_first) / hours:.0f} | {naive_moves / hours:.0f} |"
    )


def report(
    args: argparse.Namespace,
    settings: dict[str, float],
    demand: float,
    next_sample: tuple[list[float], list[float]],
    decided_from: tuple[list[float], list[float]],
    times: list[float],
) -> None:
    def q(values: list[float]) -> str:
        values = sorted(values)
        return (
            f"median {statistics.median(values):.3f}, p95 {values[int(0.95 * len(values))]:.3f}, "
            f"max {values[-1]:.3f}"
        )

    print(
        f"machine: {platform.node()}, {os.cpu_count()} CPUs, Python {platform.python_version()}, "
        f"{time.strftime('%Y-%m-%d')}"
    )
    print(
        f"{args.guests} guests x {args.vcpus} vCPUs on {args.cpus} host CPUs, "
        f"{args.steps} steps of 5 s, seed {args.seed}, bursts {args.bursts}; "
        f"mean demand {demand:.0f} % per host CPU; settings {settings or 'default'}\n"
    )
    print("| measurement | balance | naive re-pack every step |\n|---|---|---|")
    print(f"| busiest CPU / lower bound, next sample | {q(next_sample[0])} | {q(next_sample[1])} |")
    print(
        f"| busiest CPU / lower bound, sample decided from | {q(decided_from[0])} "
        f"| {q(decided_from[1])} |"
    )
    ms = sorted(t * 1000 for t in times)
    print(
        f"| decision time | median {statistics.median(ms):.1f} ms, "
        f"p99 {ms[int(0.99 * len(ms))]:.1f} ms, max {ms[-1]:.1f} ms "
        f"(first, placing all: {times[0] * 1000:.1f} ms) | - |"
    )


if __name__ == "__main__":
    main()
