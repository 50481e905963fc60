"""Daemon benchmark on a real libvirtd with QEMU guests (run as root).

Run: sudo tests/lab/libvirtd up && .venv/bin/python bench/bench_daemon.py [--guests 30]

Measures, on diskless QEMU guests (64 MiB, 2 vCPUs, TCG):

(a) the window a newly started guest runs without its policy: the policy is
    written to the definition first, then the guest is started and its live
    pinning read at once; any start whose first reading differs counts;
(b) time from a policy write to the tuning being live on a running guest:
    through the daemon's API (PATCH on the Unix socket, which wakes the
    controller), and through the store by another process (the CLI with
    --db, noticed by the daemon's store poll), against the floor of one
    libvirt pinning call;
(c) CPU time of a reconcile pass per guest with N guests in steady state
    (nothing to change), in-process.

Prints a Markdown table for bench/README.md. Nothing here is asserted.
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import libvirt

from virtpolicy.engine import changes
from virtpolicy.engine.tuning.reconcile import Reconciler
from virtpolicy.hypervisor.connection import LibvirtConnection
from virtpolicy.store import SqlStore

URI = "qemu:///system"
VIRTPOLICY = Path(sys.executable).parent / "virtpolicy"
XML = """<domain type='qemu'><name>{name}</name><memory unit='MiB'>64</memory><vcpu>2</vcpu>
<os><type arch='x86_64' machine='pc'>hvm</type><boot dev='network'/></os>
<devices><console type='pty'/></devices></domain>"""


def pins(dom: libvirt.virDomain) -> list[frozenset[int]]:
    return [
        frozenset(i for i, on in enumerate(m) if on)
        for m in dom.vcpuPinInfo(libvirt.VIR_DOMAIN_AFFECT_LIVE)
    ]


def remove(conn: libvirt.virConnect, name: str) -> None:
    try:
        dom = conn.lookupByName(name)
    except libvirt.libvirtError:
        return
    if dom.isActive():
        dom.destroy()
    dom.undefine()


def summary(seconds: list[float], digits: int = 1) -> str:
    """``median X ms, p95 Y ms, n=N``."""
    p95 = statistics.quantiles(seconds, n=100)[94] if len(seconds) > 2 else max(seconds)
    median = statistics.median(seconds)
    return f"median {median * 1000:.{digits}f} ms, p95 {p95 * 1000:.{digits}f} ms, n={len(seconds)}"


def measure_window(conn: libvirt.virConnect, store: SqlStore, starts: int) -> tuple[int, int]:
    """(starts whose first live reading differed from the policy, starts)."""
    hv = LibvirtConnection(URI)
    hv.open()
    name = "vp-bench-window"
    remove(conn, name)
    dom = conn.defineXML(XML.format(name=name))
    changes.set_policy(store, name, {"cpu": {"vcpupin": {"0": "1", "1": "0"}}}, actor="bench")
    Reconciler(store, hv).reconcile([name])
    wrong = 0
    for _ in range(starts):
        dom.create()
        if pins(dom) != [frozenset({1}), frozenset({0})]:
            wrong += 1
        dom.destroy()
    remove(conn, name)
    hv.close()
    return wrong, starts


def measure_latency(
    conn: libvirt.virConnect, guest: str, writes: int, db: str, run_dir: Path
) -> tuple[list[float], list[float], list[float]]:
    """Seconds from write to live: via the API, via the store; and one pin call."""
    dom = conn.lookupByName(guest)
    floor = []
    for i in range(writes):
        cpumap = (i % 2 == 0, i % 2 == 1)
        start = time.perf_counter()
        dom.pinVcpuFlags(0, cpumap, libvirt.VIR_DOMAIN_AFFECT_LIVE)
        floor.append(time.perf_counter() - start)
    daemon = subprocess.Popen(
        [
            str(VIRTPOLICY),
            "--db",
            db,
            "serve",
            "--connect",
            URI,
            "--run-dir",
            str(run_dir),
            "--reconcile-interval",
            "3600",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        sock = run_dir / "virtpolicy.sock"
        while not sock.exists():
            time.sleep(0.05)
        client = httpx.Client(transport=httpx.HTTPTransport(uds=str(sock)), base_url="http://vp")
        client.put(f"/v1/policies/{guest}", json={"cpu": {"vcpupin": {"0": "0"}}})
        wait_for(dom, frozenset({0}), 10)
        via_api = []
        for i in range(writes):
            cpu = (i + 1) % 2
            start = time.perf_counter()
            client.patch(f"/v1/policies/{guest}", json={"cpu": {"vcpupin": {"0": str(cpu)}}})
            wait_for(dom, frozenset({cpu}), 10)
            via_api.append(time.perf_counter() - start)
        via_store = []
        store = SqlStore(db)
        # Random spacing: a write right after the previous change would ride on
        # the pass that the daemon's own tunable event triggers, hiding the poll.
        rng = random.Random(1)
        for i in range(max(writes // 2, 5)):
            cpu = i % 2
            time.sleep(rng.uniform(0.05, 0.6))
            start = time.perf_counter()
            changes.set_policy(store, guest, {"cpu": {"vcpupin": {"0": str(cpu)}}}, actor="bench")
            wait_for(dom, frozenset({cpu}), 10)
            via_store.append(time.perf_counter() - start)
        store.close()
    finally:
        daemon.send_signal(signal.SIGTERM)
        daemon.wait(timeout=15)
    return via_api, via_store, floor


def wait_for(dom: libvirt.virDomain, cpus: frozenset[int], timeout: float) -> None:
    deadline = time.perf_counter() + timeout
    while pins(dom)[0] != cpus:
        if time.perf_counter() > deadline:
            raise SystemExit(f"vCPU 0 of {dom.name()} never reached {sorted(cpus)}")
        time.sleep(0.0005)


def measure_pass_cpu(store: SqlStore, guests: list[str], passes: int) -> tuple[float, float]:
    """(CPU µs per guest per pass, wall ms per pass) in steady state."""
    hv = LibvirtConnection(URI)
    hv.open()
    for i, guest in enumerate(guests):
        changes.set_policy(
            store,
            guest,
            {
                "cpu": {
                    "vcpupin": {"0": str(i % 2)},
                    "vcpus": "0-1",
                    "emulatorpin": "0-1",
                    "weight": 100 + i,
                    "cap": 150,
                }
            },
            actor="bench",
        )
    reconciler = Reconciler(store, hv)
    reconciler.reconcile()  # converge first: later passes change nothing
    cpu0, wall0 = time.process_time(), time.perf_counter()
    for _ in range(passes):
        statuses = reconciler.reconcile()
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    drifting = [s.guest for s in statuses if s.drift or s.error]
    if drifting:
        raise SystemExit(f"not a steady state, these guests drift: {drifting}")
    hv.close()
    return cpu / passes / len(guests) * 1e6, wall / passes * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--guests", type=int, default=30)
    parser.add_argument("--starts", type=int, default=20)
    parser.add_argument("--writes", type=int, default=40)
    parser.add_argument("--passes", type=int, default=20)
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="vp-bench-daemon-"))
    conn = libvirt.open(URI)
    names = [f"vp-bench-{i:02d}" for i in range(args.guests)]
    for name in names:
        remove(conn, name)
        conn.defineXML(XML.format(name=name)).create()
    rows: list[tuple[str, str]] = []
    try:
        store = SqlStore(str(work / "window.db"))
        wrong, starts = measure_window(conn, store, args.starts)
        rows.append(
            ("(a) starts whose first live reading lacked the policy", f"{wrong} of {starts}")
        )
        via_api, via_store, floor = measure_latency(
            conn, names[0], args.writes, str(work / "latency.db"), work / "run"
        )
        rows.append(("(b) write -> live, through the API (PATCH on the socket)", summary(via_api)))
        rows.append(("(b) write -> live, through the store (CLI --db)", summary(via_store, 0)))
        rows.append(("(b) floor: one pinVcpuFlags(LIVE) call", summary(floor, 2)))
        cpu_us, wall_ms = measure_pass_cpu(SqlStore(str(work / "pass.db")), names, args.passes)
        rows.append(
            (
                f"(c) reconcile pass, {args.guests} guests, steady state: CPU per guest",
                f"{cpu_us:.0f} µs",
            )
        )
        rows.append(
            (f"(c) reconcile pass, {args.guests} guests: wall time per pass", f"{wall_ms:.0f} ms")
        )
    finally:
        for name in names:
            remove(conn, name)
        conn.close()

    print(
        f"machine: {platform.node()}, {os.cpu_count()} CPUs, Python {platform.python_version()}, "
        f"libvirt {libvirt.getVersion() // 1000000}.{libvirt.getVersion() // 1000 % 1000}, "
        f"{time.strftime('%Y-%m-%d')}\n"
    )
    print("| measurement | result |\n|---|---|")
    for name, value in rows:
        print(f"| {name} | {value} |")


if __name__ == "__main__":
    main()
