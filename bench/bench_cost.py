"""The whole daemon's cost: CPU of `virtpolicy serve` and of libvirtd, whole processes.

Run: sudo tests/lab/libvirtd up && .venv/bin/python bench/bench_cost.py [--seconds 120] [--runs 3]

Two measurements on the lab's real libvirtd, each over --seconds, CPU time
(user + system) read from /proc/PID/stat of both processes before and after:

- idle: the daemon with nothing to do (no guest, sampling set to an hour);
- sampling: 20 running diskless QEMU guests (2 vCPUs, TCG), each with a
  policy, sampled every 5 s, as configured by default (nobody reads the
  per-vCPU or memory figures, so only state and CPU time are asked for);
- sampling with a reader: the same, with a reader of /v1/stats/guests every
  15 s (so per-vCPU and memory counters are collected, as for a Prometheus
  scrape). Both are reported per guest per sample, daemon and libvirtd
  together;
- floor (``--only floor``): the same guests read by bench/floor_sampler.py, a
  Python process that reads the same kernel files and does nothing else
  (plain, in an asyncio loop's worker thread, and as a process hearing
  libvirt's events with a sampling thread: libvirtd's CPU counted too);
- answer (``--only answer``): the daemon's CPU for one answer of
  /v1/stats/guests with no guest.

Every run is printed. Nothing is asserted.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import libvirt

from lab_daemon import serve

URI = "qemu:///system"
VIRTPOLICY = Path(sys.executable).parent / "virtpolicy"
PY_SPY = str(Path(sys.executable).parent / "py-spy")
TICK = os.sysconf("SC_CLK_TCK")
XML = """<domain type='qemu'><name>{name}</name><memory unit='MiB'>64</memory><vcpu>2</vcpu>
<os><type arch='x86_64' machine='pc'>hvm</type><boot dev='network'/></os>
<devices><console type='pty'/><memballoon model='virtio'/></devices></domain>"""


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / TICK


CPUACCT = Path("/sys/fs/cgroup/cpuacct")


@contextlib.contextmanager
def accounted(pid: int) -> Iterator[Callable[[], float]]:
    """The CPU seconds of process ``pid`` and every thread it starts, to the
    nanosecond, exited threads included: it runs in a cpuacct cgroup of its own
    while the block lasts (cgroup v1's, as on this lab; where there is none, the
    process's clock ticks, 10 ms each)."""
    if not (CPUACCT / "cpuacct.usage").exists():
        yield lambda: cpu_seconds(pid)
        return
    group = CPUACCT / f"vp-bench-{pid}"
    group.mkdir(exist_ok=True)
    (group / "cgroup.procs").write_text(str(pid))
    try:
        yield lambda: int((group / "cpuacct.usage").read_text()) / 1e9
    finally:
        with contextlib.suppress(OSError):  # the process may be gone
            (CPUACCT / "cgroup.procs").write_text(str(pid))
        with contextlib.suppress(OSError):
            group.rmdir()


def thread_seconds(pid: int) -> float:
    """The CPU seconds of the threads ``pid`` has now (their schedstat, in ns): for
    libvirtd, whose threads live as long as it does."""
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError):
            total += int((task / "schedstat").read_text().split()[0])
    return total / 1e9


def per_thread(pid: int) -> dict[int, tuple[int, int]]:
    """Each thread of ``pid`` now: its CPU so far (ns) and how many times it ran
    (its schedstat: a thread that sleeps between runs woke that often)."""
    found = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError):
            ran, _, runs = (task / "schedstat").read_text().split()[:3]
            found[int(task.name)] = (int(ran), int(runs))
    return found


def thread_names(pid: int) -> dict[int, str]:
    """The Python name of each thread of ``pid`` (py-spy's dump, read from outside)."""
    out = subprocess.run(
        [PY_SPY, "dump", "--nonblocking", "-p", str(pid)],
        capture_output=True,
        text=True,
        check=False,
    ).stdout
    return {int(m[1]): m[2] for m in re.finditer(r'^Thread (\d+) \(\w+\): "([^"]*)"', out, re.M)}


def by_thread(pid: int, before: dict[int, tuple[int, int]], total: float) -> str:
    """What each thread of ``pid`` used since ``before``, in ms, and how many times
    it ran; threads gone since (or started and gone) as the rest of ``total`` (s)."""
    after, names = per_thread(pid), thread_names(pid)
    used: dict[str, list[float]] = {}
    for tid, (ns, runs) in after.items():
        name = re.sub(r"_\d+$", "", names.get(tid, str(tid)))  # a pool's threads together
        was = before.get(tid, (0, 0))
        figures = used.setdefault(name, [0.0, 0])
        figures[0] += (ns - was[0]) / 1e6
        figures[1] += runs - was[1]
    gone = total * 1e3 - sum(ms for ms, _ in used.values())
    return ", ".join(
        [
            f"{k} {ms:.1f} ({runs:.0f} runs)"
            for k, (ms, runs) in sorted(used.items(), key=lambda kv: -kv[1][0])
        ]
        + [f"threads now gone {gone:.1f}"]
    )


def libvirtd_pid() -> int:
    out = subprocess.run(["pgrep", "-x", "libvirtd"], capture_output=True, text=True, check=True)
    return int(out.stdout.split()[0])


def measure(
    seconds: float,
    guests: int,
    sample: float,
    reader: bool,
    profile: Path | None = None,
    threads: bool = False,
) -> tuple[float, float, int]:
    """(daemon CPU s, libvirtd CPU s, samples taken) over ``seconds``; with ``profile``,
    py-spy's samples of the daemon over the same time written there (collapsed
    stacks, on-CPU only; py-spy reads the daemon from outside, without stopping it)."""
    conn = libvirt.open(URI)
    names = [f"vp-bench-cost{i}" for i in range(guests)]
    with tempfile.TemporaryDirectory() as tmp:
        db, run_dir = f"{tmp}/p.db", Path(tmp) / "run"
        started(conn, names)
        if names:
            Path(f"{tmp}/p.json").write_text(
                json.dumps([{"guest": name, "cpu": {"weight": 200}} for name in names])
            )
            subprocess.run(
                [str(VIRTPOLICY), "--db", db, "apply", "-f", f"{tmp}/p.json"],
                check=True,
                stdout=subprocess.DEVNULL,
            )
        args = ("--connect", URI, "--no-autostart", "--sample-interval", str(sample))
        transport = httpx.HTTPTransport(uds=str(run_dir / "virtpolicy-ro.sock"))
        try:
            with (
                serve(db, run_dir, *args) as daemon,
                accounted(daemon.pid) as used,
                httpx.Client(transport=transport, base_url="http://vp") as api,
            ):
                # A reader that has been reading for a while (a scrape): its first
                # read, and what the daemon does once when a reader comes (each
                # guest's status read, its history widened), are before the window.
                next_read = time.monotonic()
                settled = next_read + 10  # connected, first passes done
                # ... and with guests, the daemon's first pass over them done (it
                # enforces each policy: libvirt rewrites each guest's status), and
                # then a round of memory reads (every 30 s), which reads those
                # statuses again: once per start, not in the window.
                warm: int | None = None if names else 0
                while True:
                    host = api.get("/v1/host").json()
                    if warm is None and host["pass_cpu_s"]["last_full"]:
                        warm = host["samples"] + math.ceil(30 / sample) + 1
                    ready = warm is not None and host["samples"] >= warm
                    if ready and time.monotonic() >= settled:
                        break
                    if reader and time.monotonic() >= next_read:
                        api.get("/v1/stats/guests")
                        next_read += 15
                    time.sleep(0.5)
                # /v1/host, not /v1/stats/host: reading the host CPUs' figures
                # would make the daemon collect them.
                before = samples(api)
                lv = libvirtd_pid()
                each = per_thread(daemon.pid)
                d0, l0, t0 = used(), thread_seconds(lv), time.monotonic()
                spy_args = ["-r", "1000", "-f", "raw", "-o", str(profile), "-d", str(int(seconds))]
                spy = profile and subprocess.Popen(
                    [PY_SPY, "record", "--nonblocking", *spy_args, "-p", str(daemon.pid)],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
                while time.monotonic() - t0 < seconds:
                    if reader and time.monotonic() >= next_read:
                        api.get("/v1/stats/guests")
                        next_read += 15
                    time.sleep(0.5)
                d1, l1 = used(), thread_seconds(lv)
                if threads:
                    print(f"  by thread (ms): {by_thread(daemon.pid, each, d1 - d0)}", flush=True)
                if spy:
                    spy.wait()
                taken = samples(api) - before
            return d1 - d0, l1 - l0, taken
        finally:
            stopped(conn, names)
            conn.close()


def samples(api: httpx.Client) -> int:
    """How many samples the daemon took."""
    return int(api.get("/v1/host").json()["samples"])


#: From this many guests on, each is suspended once booted (as the issue's
#: figure asks: their own CPU would leave none to measure the daemon with);
#: a suspended guest is sampled all the same.
SUSPEND_FROM = 50


def started(conn: libvirt.virConnect, names: list[str]) -> None:
    """Start the guests, eight at a time (suspended once booted, when there are many)."""

    def start(name: str) -> None:
        dom = conn.createXML(XML.format(name=name), 0)
        if len(names) >= SUSPEND_FROM:
            time.sleep(0.2)  # past QEMU's start-up
            dom.suspend()

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(start, names))


def stopped(conn: libvirt.virConnect, names: list[str]) -> None:
    """Destroy the guests, eight at a time (each waits for its QEMU to exit)."""

    def stop(name: str) -> None:
        with contextlib.suppress(libvirt.libvirtError):
            conn.lookupByName(name).destroy()

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(stop, names))


FLOOR = Path(__file__).with_name("floor_sampler.py")
FLOOR_MODES = {
    "plain": "plain loop",
    "asyncio": "asyncio + worker thread",
    "events": "libvirt events on asyncio + a sampling thread",
}


def floor(seconds: float, guests: int, interval: float) -> None:
    """The same guests read by bench/floor_sampler.py, a Python process that does
    nothing else: its CPU per guest per sample, plain and in an asyncio loop's
    worker thread, without and with the per-vCPU files."""
    conn = libvirt.open(URI)
    names = [f"vp-bench-cost{i}" for i in range(guests)]
    try:
        started(conn, names)
        time.sleep(5)
        for mode in ("plain", "asyncio", "events"):
            for reader in (False, True):
                python = [sys.executable] if mode == "events" else ["/usr/bin/python3", "-S"]
                proc = subprocess.Popen(
                    [*python, str(FLOOR), str(interval), "1" if reader else "0", mode, *names],
                    stdout=subprocess.PIPE, text=True,
                )  # fmt: skip
                with accounted(proc.pid) as spent:
                    time.sleep(2)  # started, files opened
                    lv = libvirtd_pid()
                    c0, l0, t0 = spent(), thread_seconds(lv), time.monotonic()
                    time.sleep(seconds)
                    used, lv_used = spent() - c0, thread_seconds(lv) - l0
                proc.terminate()
                taken = int(proc.communicate(timeout=10)[0].split()[-1])
                per = (used + lv_used) / max(1, taken * guests) * 1e6
                print(
                    f"floor, {guests} guests every {interval:g} s, "
                    f"{FLOOR_MODES[mode]}, "
                    f"{'with the vCPU files' if reader else 'CPU time only'}: "
                    f"{used:.3f} s (libvirtd {lv_used:.3f} s) over "
                    f"{time.monotonic() - t0:.0f} s, {taken} samples: "
                    f"{per:.0f} µs per guest per sample, libvirtd's included",
                    flush=True,
                )
    finally:
        stopped(conn, names)
        conn.close()


def answers(count: int = 10) -> None:
    """The daemon's CPU per answer of ``/v1/stats/guests`` with no guest: what any
    reader's request costs before a guest is in it (the HTTP stack), its idle
    CPU over as long subtracted."""
    with tempfile.TemporaryDirectory() as tmp:
        run_dir = Path(tmp) / "run"
        args = ("--connect", URI, "--no-autostart", "--sample-interval", "3600")
        transport = httpx.HTTPTransport(uds=str(run_dir / "virtpolicy-ro.sock"))
        with (
            serve(f"{tmp}/p.db", run_dir, *args) as daemon,
            accounted(daemon.pid) as used,
            httpx.Client(transport=transport, base_url="http://vp") as api,
        ):
            api.get("/v1/stats/guests")
            time.sleep(5)
            c0 = used()
            for _ in range(count):
                api.get("/v1/stats/guests")
                time.sleep(0.5)
            asked = used() - c0
            c1 = used()
            time.sleep(0.5 * count)
            idle = used() - c1
    print(f"one answer of /v1/stats/guests, no guest: {(asked - idle) / count * 1e3:.2f} ms of CPU")


def libvirtd_alone(seconds: float, guests: int) -> float:
    """libvirtd's CPU seconds over ``seconds`` with the same guests and no daemon: what
    the guests cost it anyway (QEMU monitor traffic, reboots of guests with no OS)."""
    conn = libvirt.open(URI)
    names = [f"vp-bench-cost{i}" for i in range(guests)]
    try:
        started(conn, names)
        time.sleep(10)
        lv = libvirtd_pid()
        l0 = thread_seconds(lv)
        time.sleep(seconds)
        return thread_seconds(lv) - l0
    finally:
        stopped(conn, names)
        conn.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=120)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--guests", type=int, default=20)
    parser.add_argument("--only", choices=["idle", "sampling", "floor", "answer"])
    parser.add_argument("--interval", type=float, default=5, help="sample interval (s)")
    parser.add_argument("--no-reader", action="store_true", help="only without a reader")
    parser.add_argument("--only-reader", action="store_true", help="only with a reader")
    parser.add_argument(
        "--profile", type=Path, help="py-spy the daemon into this folder (figures then skewed)"
    )
    parser.add_argument(
        "--threads", action="store_true", help="the daemon's CPU by thread (py-spy names them)"
    )
    parser.add_argument(
        "--no-alone", action="store_true", help="skip libvirtd with the guests and no daemon"
    )
    args = parser.parse_args()
    print(f"{platform.node()}, {os.cpu_count()} CPUs, {time.strftime('%Y-%m-%d')}", flush=True)
    for n in range(1, args.runs + 1):
        if args.only == "floor":
            floor(args.seconds, args.guests, args.interval)
            continue
        if args.only == "answer":
            answers()
            continue
        if args.only != "sampling":
            d, lv, _ = measure(args.seconds, 0, 3600, reader=False, threads=args.threads)
            print(
                f"run {n} idle: daemon {d:.3f} s, libvirtd {lv:.3f} s CPU per {args.seconds:.0f} s",
                flush=True,
            )
        if args.only != "idle":
            if not args.no_alone:
                alone = libvirtd_alone(args.seconds, args.guests)
                print(
                    f"run {n} libvirtd with the {args.guests} guests and no daemon: {alone:.3f} s",
                    flush=True,
                )
            readers = (False,) if args.no_reader else (True,) if args.only_reader else (False, True)
            for reader in readers:
                label = "reader" if reader else "default"
                spy = args.profile and args.profile / f"run{n}-{label}.txt"
                d, lv, taken = measure(
                    args.seconds, args.guests, args.interval, reader, spy, args.threads
                )
                per = (d + lv) / max(1, taken * args.guests) * 1e6
                print(
                    f"run {n} sampling {args.guests} guests every {args.interval:g} s"
                    f"{', with a reader' if reader else ''}: {taken} samples, "
                    f"daemon {d:.3f} s, libvirtd {lv:.3f} s: {per:.0f} µs per guest per sample "
                    f"(daemon {d / max(1, taken * args.guests) * 1e6:.0f}, "
                    f"libvirtd {lv / max(1, taken * args.guests) * 1e6:.0f}); "
                    f"the daemon used {d / args.seconds * 100:.1f} % of one CPU",
                    flush=True,
                )


if __name__ == "__main__":
    main()
