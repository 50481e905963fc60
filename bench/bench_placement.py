"""The placer: 2,000 guests arriving one at a time on a 256-CPU, 8-node SMT-2 host.

Run: .venv/bin/python bench/bench_placement.py [--guests 2000] [--seed 1]

A seeded mix: shared guests, and dedicated guests with each thread policy,
some bound to one NUMA node, with 1-8 vCPUs. Each arrival calls the placer
with every guest so far (the placed ones keep their place), as the daemon
would. Measured, every figure printed: time per placement (median, p99,
max); how many guests were placed, against a first-fit placer that ignores
topology (dedicated vCPUs on the lowest free host CPUs, the way Kubernetes'
static CPU manager policy is close to); and fragmentation at the end: cores
with some but not all threads dedicated, and nodes with some but not all
CPUs dedicated. Nothing is asserted.

Not yet here: the comparison with an exact solver on small instances.
"""

from __future__ import annotations

import argparse
import platform
import random
import statistics
import time

from virtpolicy.policy.placement import Placement, Request, place
from virtpolicy.policy.topology import Topology


def arrivals(count: int, seed: int) -> list[Request]:
    rng = random.Random(seed)
    found = []
    for i in range(count):
        vcpus = rng.choice([1, 2, 2, 4, 4, 8])
        if rng.random() < 0.4:
            found.append(Request(f"s{i}", vcpus, nodes=rng.choice([None, None, 1])))
        else:
            threads = rng.choice(["prefer", "isolate", "require"])
            emulator = rng.choice(["share", "share", "isolate"])
            found.append(
                Request(f"d{i}", vcpus, "dedicated", threads, emulator, rng.choice([None, 1]))
            )
    return found


def first_fit(topology: Topology, requests: list[Request]) -> int:
    """Guests placed by a placer that ignores topology: each dedicated vCPU on the
    lowest free host CPU; shared guests, as with ours, when some CPU is left
    over for them at the end."""
    free = sorted(c.id for c in topology.cpus)
    placed = 0
    for r in requests:
        if r.placement == "dedicated" and len(free) >= r.vcpus:
            free = free[r.vcpus :]
            placed += 1
    shared = sum(r.placement == "shared" for r in requests)
    return placed + (shared if free else 0)


def fragmentation(topology: Topology, result: Placement) -> tuple[int, int]:
    held = set().union(*(p.dedicated for p in result.guests.values()))
    half_cores = sum(
        1 for threads in topology.cores().values() if 0 < len(held & set(threads)) < len(threads)
    )
    half_nodes = sum(
        1
        for n in topology.nodes
        if 0 < len(held & topology.cpus_of([n])) < len(topology.cpus_of([n]))
    )
    return half_cores, half_nodes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--guests", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    topology = Topology.regular(8, 1, 16, 2)
    requests = arrivals(args.guests, args.seed)
    print(f"{platform.node()}, {time.strftime('%Y-%m-%d')}, {topology}, seed {args.seed}")
    times = []
    result = Placement()
    for i in range(len(requests)):
        t = time.perf_counter()
        result = place(topology, frozenset(), requests[: i + 1], result.guests)
        times.append(time.perf_counter() - t)
    ordered = sorted(times)
    dedicated = [r for r in requests if r.placement == "dedicated"]
    placed_dedicated = sum(r.guest in result.guests for r in dedicated)
    half_cores, half_nodes = fragmentation(topology, result)
    ff = first_fit(topology, requests)
    print(
        f"time per placement: median {statistics.median(times) * 1000:.2f} ms, "
        f"p99 {ordered[int(0.99 * len(ordered))] * 1000:.2f} ms, max {ordered[-1] * 1000:.2f} ms"
    )
    print(
        f"placed: {len(result.guests)} of {len(requests)} "
        f"({placed_dedicated} of {len(dedicated)} dedicated); first-fit ignoring topology: {ff}"
    )
    print(f"at the end: {half_cores} half-used cores, {half_nodes} partly dedicated nodes")


if __name__ == "__main__":
    main()
