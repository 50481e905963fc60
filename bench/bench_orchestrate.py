"""Orchestrated start of a 1,000-guest DAG on libvirt's test driver.

Run: .venv/bin/python bench/bench_orchestrate.py [--guests 1000] [--seed 1]

Each guest requires up to three of the 50 guests before it (a seeded random
DAG). Each guest is "up" a seeded random 0-200 ms after it starts: every edge
to it carries the condition ``exec:sleep D``, a real probe that holds D
seconds after it is first run, which is when the guest has started.

Reported:
- makespan: from the call to the last guest started;
- the critical-path lower bound: with zero cost to start a guest, guest g
  can start at max over its dependencies d of (start(d) + D(d));
- a priority-ordered sequential start, the way Proxmox VE's `startup:
  order=,up=` works (one guest at a time, waiting for each to be up), which is
  the sum of the up delays, computed rather than run (it takes minutes).

Nothing here is asserted.
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import tempfile
import time
from pathlib import Path

from virtpolicy.engine.jobs.orchestrate import Orchestrator
from virtpolicy.engine.runtime import aio
from virtpolicy.hypervisor.connection import LibvirtConnection
from virtpolicy.policy.graph import start_waves
from virtpolicy.policy.model import GuestPolicy, parse_policy


def make(n: int, seed: int) -> tuple[dict[str, GuestPolicy], dict[str, float]]:
    """Policies with a random DAG, and each guest's up delay in seconds."""
    rng = random.Random(seed)
    delay = {f"g{i:04d}": round(rng.uniform(0, 0.2), 3) for i in range(n)}
    policies = {}
    for i in range(n):
        name = f"g{i:04d}"
        deps = rng.sample(range(max(0, i - 50), i), k=min(i, rng.randint(0, 3))) if i else []
        requires = [
            {"guest": f"g{d:04d}", "when": f"exec:sleep {delay[f'g{d:04d}']}", "timeout": 60}
            for d in deps
        ]
        policies[name] = parse_policy({"guest": name, "requires": requires})
    return policies, delay


def node_xml(names: list[str]) -> str:
    domains = "".join(
        f"<domain type='test'><name>{n}</name><memory>1024</memory><vcpu>1</vcpu>"
        f"<os><type>hvm</type></os></domain>"
        for n in names
    )
    return (
        "<node><cpu><mhz>2000</mhz><model>x86_64</model><nodes>1</nodes><sockets>1</sockets>"
        "<cores>64</cores><threads>1</threads><active>64</active><max>64</max></cpu>"
        f"<memory>67108864</memory>{domains}</node>"
    )


def lower_bound(policies: dict[str, GuestPolicy], delay: dict[str, float]) -> float:
    """When the last guest can start at the earliest, with free starts."""
    edges = {g: p.dependencies() for g, p in policies.items()}
    start: dict[str, float] = {}
    for wave in start_waves(edges):
        for g in wave:
            start[g] = max((start[d] + delay[d] for d, _ in edges[g]), default=0.0)
    return max(start.values())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--guests", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--concurrency", type=int, default=64)
    args = parser.parse_args()

    policies, delay = make(args.guests, args.seed)
    node = Path(tempfile.mkdtemp(prefix="vp-bench-orch-")) / "host.xml"
    node.write_text(node_xml(sorted(policies)))
    hv = LibvirtConnection(f"test://{node}")
    hv.open()
    for g in policies:
        hv.destroy(g)  # the test driver starts its node's guests running
    starting: dict[str, float] = {}
    started: dict[str, float] = {}
    held: dict[tuple[str, str], float] = {}

    def progress(guest: str, event: str, _detail: str) -> None:
        if event == "starting":
            starting[guest] = time.perf_counter()
        elif event == "started":
            started[guest] = time.perf_counter()

    def holds(guest: str, condition: str) -> None:
        held[guest, condition] = time.perf_counter()

    orchestrator = Orchestrator(hv, policies, args.concurrency, progress=progress, on_holds=holds)
    start = time.perf_counter()
    results = aio.run(orchestrator.start())
    makespan = time.perf_counter() - start
    hv.close()
    failed = [r for r in results if not r.ok]
    bound = lower_bound(policies, delay)
    sequential = sum(delay.values())
    waves = start_waves({g: p.dependencies() for g, p in policies.items()})

    print(
        f"machine: {platform.node()}, {os.cpu_count()} CPUs, Python {platform.python_version()}, "
        f"{time.strftime('%Y-%m-%d')}"
    )
    print(
        f"{args.guests} guests, {sum(len(p.requires) for p in policies.values())} requires edges, "
        f"{len(waves)} waves, seed {args.seed}, concurrency {args.concurrency}\n"
    )
    print("| measurement | result |\n|---|---|")
    print(f"| guests started / failed | {len(results) - len(failed)} / {len(failed)} |")
    print(f"| makespan | {makespan:.2f} s |")
    print(f"| critical-path lower bound | {bound:.2f} s |")
    print(f"| makespan / lower bound | {makespan / bound:.3f} |")
    print(f"| priority-ordered sequential start (sum of up delays) | {sequential:.1f} s |")
    print(f"| makespan / sequential | {makespan / sequential:.4f} |")
    # The trace: from a guest's last dependency being up to its start call.
    lags = sorted(
        (starting[g] - max(held[d.guest, d.when] for d in p.requires), g)
        for g, p in policies.items()
        if p.requires and g in starting
    )
    ms = [lag * 1000 for lag, _ in lags]
    first = sorted(starting.values())
    print(
        f"| scheduling lag (last dependency up -> start call), median / p95 / max | "
        f"{ms[len(ms) // 2]:.1f} / {ms[int(len(ms) * 0.95)]:.1f} / {ms[-1]:.1f} ms |"
    )
    print(f"| first start call after the call | {(first[0] - start) * 1000:.1f} ms |")
    calls = sorted((started[g] - starting[g]) * 1000 for g in started if g in starting)
    print(
        f"| start call (in a worker thread), median / p95 / max | "
        f"{calls[len(calls) // 2]:.1f} / {calls[int(len(calls) * 0.95)]:.1f} / {calls[-1]:.1f} ms |"
    )
    # A probe of exec:sleep D holds at best D after its guest started: the rest is
    # spawning the process and noticing its exit.
    over = sorted(
        (at - started[guest] - delay[guest]) * 1000
        for (guest, _cond), at in held.items()
        if guest in started
    )
    print(
        f"| probe overhead (held - started - D), median / p95 / max | "
        f"{over[len(over) // 2]:.1f} / {over[int(len(over) * 0.95)]:.1f} / {over[-1]:.1f} ms |"
    )


if __name__ == "__main__":
    main()
