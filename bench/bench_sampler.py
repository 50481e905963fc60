"""The sampler's cost: one bulk call against per-guest polling, on real QEMU guests.

Run: sudo tests/lab/libvirtd up && .venv/bin/python bench/bench_sampler.py [--guests 20]

Starts N diskless QEMU guests (2 vCPUs each), then takes samples of the same
counters three ways and reports CPU microseconds per guest per sample, in
this process (the libvirt client: RPC and decoding) and in libvirtd:

- bulk: ``virConnectGetAllDomainStats`` once per sample, with every group
  (what the daemon does while per-vCPU and memory figures are read), with
  state and CPU only (what it does otherwise), and with each optional group;
- per guest, same data: ``virDomainListGetStats`` once per guest;
- per guest, MoM style: state, CPU stats, vCPU info and memory stats, a call
  each per guest (the way oVirt's MoM collects).

Then the memory one hour of 5 s history takes per guest (720 samples), as
allocated (tracemalloc) and as the ring sizes say. Nothing is asserted.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import tempfile
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path

import libvirt

from virtpolicy.engine.tuners.monitor import Monitor
from virtpolicy.hypervisor import stats

URI = "qemu:///system"
XML = """<domain type='qemu'><name>{name}</name><memory unit='MiB'>64</memory><vcpu>2</vcpu>
<os><type arch='x86_64' machine='pc'>hvm</type><boot dev='network'/></os></domain>"""


def libvirtd_ticks() -> int:
    pid = int(Path("/run/virtpolicy-lab/libvirtd.pid").read_text().split()[0])
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return int(fields[11]) + int(fields[12])  # utime + stime


def measure(name: str, take: Callable[[], object], guests: int, samples: int) -> dict[str, float]:
    take()  # warm
    tick_us = 1e6 / os.sysconf("SC_CLK_TCK")
    runs = []
    for _ in range(3):
        cpu0, d0 = time.process_time(), libvirtd_ticks()
        for _ in range(samples):
            take()
        client = (time.process_time() - cpu0) * 1e6 / samples / guests
        daemon = (libvirtd_ticks() - d0) * tick_us / samples / guests
        runs.append((client, daemon))
    return {
        "client": statistics.median(r[0] for r in runs),
        "libvirtd": statistics.median(r[1] for r in runs),
    }


def same_data_per_guest(conn: libvirt.virConnect, cpus: int) -> stats.Sample:
    guests = {}
    for dom in conn.listAllDomains():
        flags = stats.BASE_GROUPS | stats.OPTIONAL_GROUPS["vcpu"] | stats.OPTIONAL_GROUPS["balloon"]
        for d, record in conn.domainListGetStats([dom], flags):
            guests[d.name()] = stats.parse_domain_stats(d.name(), record)
    return stats.Sample(time.monotonic(), time.time(), guests, stats.host_cpu_times(conn, cpus))


def history_bytes(guests: int, vcpus: int) -> tuple[float, float]:
    """(allocated, by the ring sizes) bytes per guest for an hour of 5 s samples."""
    tracemalloc.start()
    before = tracemalloc.take_snapshot()
    monitor = Monitor(interval=5, window=3600)
    for i in range(monitor.history.capacity + 1):
        metrics = ("cpu", "rss_kib", *(f"vcpu.{v}" for v in range(vcpus)))
        metrics += tuple(f"steal.{v}" for v in range(vcpus))
        row = (metrics, (50.0, 1000.0, *[25.0] * vcpus, *[1.0] * vcpus))
        monitor.history.add(float(i * 5), {f"g{g}": row for g in range(guests)})
    after = tracemalloc.take_snapshot()
    allocated = sum(s.size_diff for s in after.compare_to(before, "filename"))
    tracemalloc.stop()
    return allocated / guests, monitor.history.bytes_for(2 + 2 * vcpus)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--guests", type=int, default=20)
    parser.add_argument("--samples", type=int, default=50)
    args = parser.parse_args()
    names = [f"vp-bench-s{i:03d}" for i in range(args.guests)]
    work = Path(tempfile.mkdtemp(prefix="vp-bench-sampler-"))
    conn = libvirt.open(URI)
    cpus = conn.getInfo()[2]

    def virsh(*a: str) -> None:
        subprocess.run(["virsh", "-q", "-c", URI, *a], capture_output=True, check=False)

    try:
        for name in names:
            virsh("destroy", name)
            virsh("undefine", name)
            (work / f"{name}.xml").write_text(XML.format(name=name))
            virsh("define", str(work / f"{name}.xml"))
            virsh("start", name)
        running = sum(1 for d in conn.listAllDomains() if d.isActive())
        time.sleep(2)
        ways = {
            "bulk (getAllDomainStats)": lambda: stats.collect(conn, cpus),
            "bulk, state and CPU only (the daemon until vCPU or memory figures are read)": (
                lambda: stats.collect(conn, cpus, ())
            ),
            "bulk, + vcpu group": lambda: stats.collect(conn, cpus, ("vcpu",)),
            "bulk, + balloon group": lambda: stats.collect(conn, cpus, ("balloon",)),
            "per guest, same data (domainListGetStats)": lambda: same_data_per_guest(conn, cpus),
            "per guest, MoM style (4 calls a guest)": lambda: stats.collect_per_guest(conn, cpus),
        }
        results = {k: measure(k, f, running, args.samples) for k, f in ways.items()}
    finally:
        for name in names:
            virsh("destroy", name)
            virsh("undefine", name)
        conn.close()
    allocated, rings = history_bytes(100, 2)

    print(
        f"machine: {platform.node()}, {os.cpu_count()} CPUs, {cpus} host CPUs seen by libvirt, "
        f"Python {platform.python_version()}, {time.strftime('%Y-%m-%d')}"
    )
    print(f"{running} running guests (2 vCPUs each), {args.samples} samples x 3 runs\n")
    print("| way | client CPU µs / guest / sample | libvirtd CPU µs / guest / sample | total |")
    print("|---|---|---|---|")
    for way, r in results.items():
        total = r["client"] + r["libvirtd"]
        print(f"| {way} | {r['client']:.0f} | {r['libvirtd']:.0f} | {total:.0f} |")
    mom = results["per guest, MoM style (4 calls a guest)"]
    for way, r in results.items():
        ratio = (mom["client"] + mom["libvirtd"]) / (r["client"] + r["libvirtd"])
        print(f"\nMoM-style polling costs {ratio:.1f}x {way}")
    print(
        f"\nhistory, 1 h of 5 s samples, 2 vCPUs: {allocated / 1024:.1f} KiB per guest allocated "
        f"({rings / 1024:.1f} KiB of rings)"
    )


if __name__ == "__main__":
    main()
