"""The placer: 2,000 guests arriving one at a time on a 256-CPU, 8-node SMT-2 host.

Run: .venv/bin/python bench/bench_placement.py [--guests 2000] [--seed 1]
     [--dedicated 0.04] [--exact 20]   (--exact needs ortools: pip install -e .[bench])

A seeded mix: shared guests (a third of them bound to one NUMA node), and a
share of dedicated guests (--dedicated) with each thread policy and emulator
policy, half of them bound to one node, with 1-8 vCPUs. Each arrival calls
the placer with every guest so far (the placed ones keep their place), as the
daemon does at each pass. Measured, every figure printed: time per placement
(median, p99, max); how many guests were placed, against a first-fit placer
that ignores topology (each dedicated vCPU on the lowest free host CPU, close
to Kubernetes' static CPU manager policy); fragmentation at the end (cores with
some but not all threads dedicated, nodes with some but not all CPUs
dedicated).

With --exact N: N small instances (a 32-CPU host, 2 nodes x 8 cores x SMT 2,
16 guests, half of them dedicated, which overfill it): guests placed by
the placer (arrival order, no lookahead), by first-fit, and by the best
packing an exact solver (OR-Tools CP-SAT, 10 s per instance) finds knowing
every guest in advance, under the same rules (dedicated CPUs of their own,
isolate and require as whole cores, one node when asked, a shared pool left
for the shared guests). Nothing is asserted.
"""

from __future__ import annotations

import argparse
import platform
import random
import statistics
import time

from virtpolicy.policy.placement import Placement, Request, place
from virtpolicy.policy.topology import Topology


def arrivals(count: int, seed: int, dedicated: float) -> list[Request]:
    rng = random.Random(seed)
    found = []
    for i in range(count):
        vcpus = rng.choice([1, 2, 2, 4, 4, 8])
        if rng.random() >= dedicated:
            found.append(Request(f"s{i}", vcpus, nodes=rng.choice([None, None, 1])))
        else:
            threads = rng.choice(["prefer", "isolate", "require"])
            emulator = rng.choice(["share", "share", "isolate"])
            found.append(
                Request(f"d{i}", vcpus, "dedicated", threads, emulator, rng.choice([None, 1]))
            )
    return found


def first_fit(topology: Topology, requests: list[Request]) -> tuple[int, int]:
    """Guests placed by a placer that ignores topology: each dedicated vCPU (and
    an isolated emulator) on the lowest free host CPU, leaving one shared, as
    ours does; shared guests when some CPU is left over for them at the end.
    And how many of its dedicated guests sit against their own policy: isolate
    with a sibling in other hands or two vCPUs on a core, require off sibling
    pairs, one NUMA node asked for and more used."""
    free = sorted(c.id for c in topology.cpus)
    placed = against = 0
    taken: dict[int, str] = {}
    for r in requests:
        need = r.vcpus + (r.emulator == "isolate")
        if r.placement == "dedicated" and len(free) > need:  # one left shared, as ours
            mine, free = free[:need], free[need:]
            taken.update(dict.fromkeys(mine, r.guest))
            placed += 1
            against += _against(topology, r, mine[: r.vcpus], taken)
    shared = sum(r.placement == "shared" for r in requests)
    return placed + (shared if free else 0), against


def _against(topology: Topology, r: Request, vcpus: list[int], taken: dict[int, str]) -> bool:
    cores = [topology.cpu(c).core_key for c in vcpus]
    if r.nodes == 1 and len({topology.cpu(c).node for c in vcpus}) > 1:
        return True
    if r.threads == "isolate":
        return len(set(cores)) < len(cores) or any(
            taken.get(t, r.guest) != r.guest for c in vcpus for t in topology.siblings(c)
        )
    if r.threads == "require":
        pairs = [vcpus[i : i + 2] for i in range(0, len(vcpus), 2)]
        return any(
            len(p) == 2 and cores[vcpus.index(p[0])] != cores[vcpus.index(p[1])] for p in pairs
        )
    return False


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


def online(topology: Topology, requests: list[Request]) -> tuple[Placement, list[float]]:
    """Every arrival placed with all before it kept: the result and each call's time."""
    times = []
    result = Placement()
    for i in range(len(requests)):
        t = time.perf_counter()
        result = place(topology, frozenset(), requests[: i + 1], result.guests)
        times.append(time.perf_counter() - t)
    return result, times


def exact(topology: Topology, requests: list[Request], limit_s: float) -> tuple[int, str]:
    """The most guests an exact solver places under the placer's rules; and
    whether it proved that best ("optimal") or ran out of time ("feasible")."""
    from ortools.sat.python import cp_model  # noqa: PLC0415 - bench only

    m = cp_model.CpModel()
    cpus = [c.id for c in topology.cpus]
    cores = topology.cores()
    dedicated = [r for r in requests if r.placement == "dedicated"]
    x = {r.guest: m.NewBoolVar(f"x_{r.guest}") for r in dedicated}
    held: dict[tuple[str, int], cp_model.IntVar] = {}
    for r in dedicated:
        g = r.guest
        h = {c: m.NewBoolVar(f"h_{g}_{c}") for c in cpus}
        held.update({(g, c): v for c, v in h.items()})
        emulator = int(r.emulator == "isolate")
        if r.threads == "prefer":
            m.Add(sum(h.values()) == (r.vcpus + emulator) * x[g])
        else:
            per = 1 if r.threads == "isolate" else 2
            fit = {k: t for k, t in cores.items() if len(t) >= per}
            z = {k: m.NewBoolVar(f"z_{g}_{k}") for k in fit}
            e = {c: m.NewBoolVar(f"e_{g}_{c}") for c in cpus}
            m.Add(sum(z.values()) == -(-r.vcpus // per) * x[g])
            m.Add(sum(e.values()) == emulator * x[g])
            for c in cpus:
                k = topology.cpu(c).core_key
                on_core = z.get(k)
                if on_core is not None:
                    m.Add(h[c] >= on_core)
                    m.Add(e[c] + on_core <= 1)
                m.Add(h[c] >= e[c])
                m.Add(h[c] <= (on_core if on_core is not None else 0) + e[c])
        if r.nodes == 1:
            w = {n: m.NewBoolVar(f"w_{g}_{n}") for n in topology.nodes}
            m.Add(sum(w.values()) == x[g])
            for c in cpus:
                m.Add(h[c] <= w[topology.cpu(c).node])
    for c in cpus:
        m.Add(sum(held[r.guest, c] for r in dedicated) <= 1)
    shared = [r for r in requests if r.placement == "shared"]
    m.Add(sum(held.values()) <= len(cpus) - 1)  # a shared CPU is left, as the placer leaves
    m.Maximize(sum(x.values()))
    solver = cp_model.CpSolver()
    solver.parameters.max_time_in_seconds = limit_s
    solver.parameters.num_workers = 2
    status = solver.Solve(m)
    placed = sum(solver.Value(v) for v in x.values())
    return placed + len(shared), "optimal" if status == cp_model.OPTIMAL else "feasible"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--guests", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--dedicated", type=float, default=0.02)
    parser.add_argument("--exact", type=int, default=0, metavar="N")
    args = parser.parse_args()
    topology = Topology.regular(8, 1, 16, 2)
    requests = arrivals(args.guests, args.seed, args.dedicated)
    print(f"{platform.node()}, {time.strftime('%Y-%m-%d')}, {topology}, seed {args.seed}")
    result, times = online(topology, requests)
    ordered = sorted(times)
    dedicated = [r for r in requests if r.placement == "dedicated"]
    placed_dedicated = sum(r.guest in result.guests for r in dedicated)
    half_cores, half_nodes = fragmentation(topology, result)
    demand = sum(r.vcpus for r in dedicated)
    print(
        f"mix: {len(dedicated)} dedicated guests ({demand} vCPUs), "
        f"{len(requests) - len(dedicated)} shared"
    )
    print(
        f"time per placement: median {statistics.median(times) * 1000:.2f} ms, "
        f"p99 {ordered[int(0.99 * len(ordered))] * 1000:.2f} ms, max {ordered[-1] * 1000:.2f} ms"
    )
    ff, against = first_fit(topology, requests)
    print(
        f"placed: {len(result.guests)} of {len(requests)} "
        f"({placed_dedicated} of {len(dedicated)} dedicated); first-fit ignoring "
        f"topology: {ff}, {against} of them against their own thread or NUMA policy"
    )
    print(f"at the end: {half_cores} half-used cores, {half_nodes} partly dedicated nodes")
    if args.exact:
        small = Topology.regular(2, 1, 8, 2)
        totals = [0, 0, 0]
        proved = wrong = 0
        for i in range(args.exact):
            rs = arrivals(16, args.seed * 1000 + i, 1 / 2)
            ours, (ff, against) = len(online(small, rs)[0].guests), first_fit(small, rs)
            best, how = exact(small, rs, 10.0)
            proved += how == "optimal"
            wrong += against
            for j, n in enumerate((ours, ff, best)):
                totals[j] += n
            print(
                f"  instance {i}: placer {ours}, first-fit {ff} ({against} against their"
                f" policy), exact {best} ({how})"
            )
        print(
            f"exact comparison, {args.exact} instances of 16 guests on {small}: "
            f"placer {totals[0]}, first-fit {totals[1]} ({wrong} against their policy), "
            f"exact {totals[2]} guests placed ({proved} of {args.exact} proved optimal)"
        )


if __name__ == "__main__":
    main()
