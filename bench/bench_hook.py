"""The libvirt hook's cost on a real libvirtd with a QEMU guest (run as root).

Run: sudo tests/lab/libvirtd up && .venv/bin/python bench/bench_hook.py [--starts 10] [--rounds 3]

Measures `virsh start` of a diskless QEMU guest (then `virsh destroy`),
without the hook and with it (a daemon answering "allowed": the guest
requires a running one), in alternating rounds, and the hook program's own
run time for `prepare begin` with the daemon's share of it. Uses
tests/lab/libvirtd restart to make libvirtd read the hooks directory;
removes the hook afterwards. Nothing is asserted.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from virtpolicy.hook.install import install, uninstall

HERE = Path(__file__).resolve().parents[1]
LAB = HERE / "tests" / "lab" / "libvirtd"
VIRTPOLICY = Path(sys.executable).parent / "virtpolicy"
URI = "qemu:///system"
XML = """<domain type='qemu'><name>{name}</name><memory unit='MiB'>64</memory><vcpu>1</vcpu>
<os><type arch='x86_64' machine='pc'>hvm</type><boot dev='network'/></os></domain>"""


def virsh(*args: str) -> None:
    subprocess.run(["virsh", "-q", "-c", URI, *args], check=True, capture_output=True)


GUESTS = ("vp-bench-hdb", "vp-bench-hweb")


def remove_guests() -> None:
    for name in GUESTS:
        for verb in ("destroy", "undefine"):
            subprocess.run(["virsh", "-q", "-c", URI, verb, name], capture_output=True, check=False)


def starts(guest: str, n: int) -> list[float]:
    times = []
    for _ in range(n):
        t = time.perf_counter()
        virsh("start", guest)
        times.append(time.perf_counter() - t)
        virsh("destroy", guest)
    return times


def restart() -> None:
    """Restart libvirtd (it reads the hooks directory then) and let the daemon reconnect."""
    subprocess.run([str(LAB), "restart"], check=True, capture_output=True)
    time.sleep(3)


def admission_roundtrip(sock_path: Path, guest: str) -> float:
    """Seconds for the hook's question, asked the way the hook asks it."""
    t = time.perf_counter()
    with socket.socket(socket.AF_UNIX) as sock:
        sock.connect(str(sock_path))
        sock.sendall(
            f"GET /v1/guests/{guest}/admission HTTP/1.0\r\nAccept: text/plain\r\n\r\n".encode()
        )
        while sock.recv(65536):
            pass
    return time.perf_counter() - t


def ms(values: list[float]) -> str:
    return f"median {statistics.median(values) * 1000:.1f} ms (n={len(values)})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--starts", type=int, default=10, help="starts per round and side")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="vp-bench-hook-"))
    remove_guests()
    for name in GUESTS:
        (work / f"{name}.xml").write_text(XML.format(name=name))
        virsh("define", str(work / f"{name}.xml"))
    virsh("start", "vp-bench-hdb")
    db = str(work / "p.db")
    subprocess.run(
        [
            str(VIRTPOLICY),
            "--db",
            db,
            "policy",
            "set",
            "vp-bench-hweb",
            "--requires",
            "vp-bench-hdb",
        ],
        check=True,
        capture_output=True,
    )
    daemon = subprocess.Popen(
        [str(VIRTPOLICY), "--db", db, "serve", "--connect", URI, "--run-dir", str(work / "run")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    without: list[float] = []
    floor: list[float] = []
    with_hook: list[float] = []
    own: list[float] = []
    answer: list[float] = []
    xml = (work / "vp-bench-hweb.xml").read_bytes()
    try:
        # Rounds alternate, each after a libvirtd restart, so that neither side
        # gets a warmer (or older) libvirtd than the other.
        for _ in range(args.rounds):
            if Path("/etc/libvirt/hooks/qemu").exists():
                uninstall("/etc/libvirt/hooks")
            restart()
            without += starts("vp-bench-hweb", args.starts)
            # The floor: libvirtd running a hook that does nothing, three times a start.
            Path("/etc/libvirt/hooks/qemu").write_text("#!/bin/sh\nexit 0\n")
            os.chmod("/etc/libvirt/hooks/qemu", 0o755)
            restart()
            floor += starts("vp-bench-hweb", args.starts)
            Path("/etc/libvirt/hooks/qemu").unlink()
            install("/etc/libvirt/hooks", str(work / "run"), "open")
            restart()
            with_hook += starts("vp-bench-hweb", args.starts)
        for _ in range(args.starts):
            t = time.perf_counter()
            subprocess.run(
                ["/etc/libvirt/hooks/qemu", "vp-bench-hweb", "prepare", "begin", "-"],
                input=xml,
                check=True,
                capture_output=True,
            )
            own.append(time.perf_counter() - t)
            answer.append(admission_roundtrip(work / "run" / "virtpolicy.sock", "vp-bench-hweb"))
    finally:
        if Path("/etc/libvirt/hooks/qemu").exists():
            uninstall("/etc/libvirt/hooks")
            restart()
        daemon.send_signal(signal.SIGTERM)
        daemon.wait(timeout=15)
        remove_guests()
    report(without, floor, with_hook, own, answer)


def report(
    without: list[float],
    floor: list[float],
    with_hook: list[float],
    own: list[float],
    answer: list[float],
) -> None:
    added = statistics.median(with_hook) - statistics.median(without)
    print(f"{os.cpu_count()} CPUs, {time.strftime('%Y-%m-%d')}\n")
    print("| measurement | result |\n|---|---|")
    print(f"| virsh start, no hook | {ms(without)} |")
    print(f"| virsh start, a hook that only exits 0 (the floor) | {ms(floor)} |")
    floor_added = statistics.median(floor) - statistics.median(without)
    print(
        f"| added by a hook that does nothing (libvirtd's own cost) | {floor_added * 1000:.1f} ms |"
    )
    print(f"| virsh start, with the hook (allowed) | {ms(with_hook)} |")
    print(f"| added by the hook (difference of medians) | {added * 1000:.1f} ms |")
    print(f"| the hook program alone, prepare begin | {ms(own)} |")
    print(f"| of which the daemon's answer (one HTTP request on its socket) | {ms(answer)} |")


if __name__ == "__main__":
    main()
