"""Admission and status while the store is locked (the daemon's event loop must not wait).

Run: .venv/bin/python bench/bench_stall.py [--runs 3] [--hold 8]

A daemon serves a test-driver host (the project's node XML). Another
process holds the SQLite write lock (BEGIN IMMEDIATE) for --hold seconds;
a PATCH through the API waits on it (and gets 503 "store busy" after the
store's busy timeout); meanwhile this process asks admission on the hook's
socket and status on the read-only socket, one request after the other, and
records each answer's latency: whole round trips, each on a fresh
connection, without a client library (as the hook asks).
Prints every run's p50, p99 and max. Nothing is asserted.
"""

from __future__ import annotations

import argparse
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

from lab_daemon import serve

HERE = Path(__file__).resolve().parents[1]
NODE = HERE / "tests" / "integration" / "nodes" / "host4.xml"
VIRTPOLICY = Path(sys.executable).parent / "virtpolicy"
HOLD = """
import sqlite3, sys, time
conn = sqlite3.connect(sys.argv[1], isolation_level=None)
conn.execute("BEGIN IMMEDIATE")
print("locked", flush=True)
time.sleep(float(sys.argv[2]))
conn.execute("ROLLBACK")
"""


def client(socket: Path) -> httpx.Client:
    return httpx.Client(
        transport=httpx.HTTPTransport(uds=str(socket)), base_url="http://vp", timeout=60
    )


def ask(path: Path, target: str) -> bytes:
    """One GET on a fresh connection, as the hook asks (HTTP/1.0, no client library)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(60)
        sock.connect(str(path))
        sock.sendall(f"GET {target} HTTP/1.0\r\nHost: vp\r\n\r\n".encode())
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def one_run(hold: float) -> dict[str, list[float]]:
    with tempfile.TemporaryDirectory() as tmp:
        db, run_dir = f"{tmp}/p.db", Path(tmp) / "run"
        with serve(db, run_dir, "--connect", f"test://{NODE}"):
            with client(run_dir / "virtpolicy.sock") as rw:
                while not rw.get("/v1/host").json()["connected"]:
                    time.sleep(0.05)
                rw.put("/v1/policies/web", json={"requires": [{"guest": "db"}]})
            holder = subprocess.Popen(
                [sys.executable, "-c", HOLD, db, str(hold)], stdout=subprocess.PIPE, text=True
            )
            assert holder.stdout is not None
            assert holder.stdout.readline().strip() == "locked"
            patch: dict[str, int] = {}

            def write() -> None:
                with client(run_dir / "virtpolicy.sock") as rw:
                    patch["status"] = rw.patch(
                        "/v1/policies/web", json={"cpu": {"weight": 300}}
                    ).status_code

            writer = threading.Thread(target=write)
            writer.start()
            time.sleep(0.2)  # the PATCH is in and waits for the lock
            got: dict[str, list[float]] = {"admission": [], "status": []}
            targets = [
                ("admission", run_dir / "virtpolicy-hook.sock", "/v1/guests/web/admission"),
                ("status", run_dir / "virtpolicy-ro.sock", "/v1/status"),
            ]  # (a fresh connection each, whole round trips)
            while writer.is_alive():
                for what, socket, path in targets:
                    t0 = time.perf_counter()
                    assert ask(socket, path).startswith(b"HTTP/1.1 200")
                    got[what].append(time.perf_counter() - t0)
            writer.join()
            holder.wait()
            got["patch_status"] = [float(patch["status"])]
            return got


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--hold", type=float, default=8.0)
    args = parser.parse_args()
    print(f"{platform.node()}, {os.cpu_count()} CPUs, {time.strftime('%Y-%m-%d')}")
    print("| run | what | requests | p50 | p99 | max | the waiting PATCH got |")
    print("|---|---|---|---|---|---|---|")
    for n in range(1, args.runs + 1):
        got = one_run(args.hold)
        for what in ("admission", "status"):
            ms = sorted(x * 1000 for x in got[what])
            p99 = ms[min(len(ms) - 1, int(len(ms) * 0.99))]
            print(
                f"| {n} | {what} | {len(ms)} | {statistics.median(ms):.1f} ms | "
                f"{p99:.1f} ms | {ms[-1]:.1f} ms | HTTP {int(got['patch_status'][0])} |"
            )


if __name__ == "__main__":
    main()
