"""Start-up of the `virtpolicy` command, whole processes, as a user runs it.

Run: .venv/bin/python bench/bench_cli.py [--runs 5] [--repeat 11]
     .venv/bin/python bench/bench_cli.py --new-store [--src OTHER/src]

Each run times --repeat executions of: `virtpolicy --version`,
`virtpolicy --server SOCKET policy get web` and `virtpolicy --server SOCKET
status` against a daemon on a test-driver host, and prints the run's median
per command (wall time of the whole process, fork to exit). Aims: --version
< 100 ms, policy get < 200 ms, status < 250 ms. Nothing is asserted.

--new-store: `virtpolicy --db DB policy list` on a new store (a new SQLite
file each time: the command makes its schema) and on one made before, the
median wall and CPU time (user + system) of each run; --src runs another
checkout's code (its src/ first on PYTHONPATH), to set two side by side.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from lab_daemon import serve

HERE = Path(__file__).resolve().parents[1]
NODE = HERE / "tests" / "integration" / "nodes" / "host4.xml"
VIRTPOLICY = str(Path(sys.executable).parent / "virtpolicy")


def timed(argv: list[str]) -> float:
    t0 = time.perf_counter()
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - t0


def timed_cpu(argv: list[str], env: dict[str, str]) -> tuple[float, float]:
    """Wall and CPU time (user + system) of one whole process."""
    t0 = time.perf_counter()
    child = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    _, status, usage = os.wait4(child.pid, 0)
    child.returncode = os.waitstatus_to_exitcode(status)
    assert child.returncode == 0, argv
    return time.perf_counter() - t0, usage.ru_utime + usage.ru_stime


def new_store(runs: int, repeat: int, src: str | None) -> None:
    env = {**os.environ, **({"PYTHONPATH": src} if src else {})}
    day = time.strftime("%Y-%m-%d")
    print(f"{platform.node()}, {os.cpu_count()} CPUs, {day}, code: {src or HERE}")
    print("| store | run | wall (median) | CPU (median) |")
    print("|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        made = f"{tmp}/made.db"
        timed_cpu([VIRTPOLICY, "--db", made, "policy", "list"], env)
        for run in range(1, runs + 1):
            for name in ("new", "made before"):
                dbs = [made if name != "new" else f"{tmp}/{run}-{n}.db" for n in range(repeat)]
                times = [timed_cpu([VIRTPOLICY, "--db", db, "policy", "list"], env) for db in dbs]
                wall = statistics.median(t for t, _ in times)
                cpu = statistics.median(c for _, c in times)
                print(f"| {name} | {run} | {wall * 1000:.0f} ms | {cpu * 1000:.0f} ms |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--repeat", type=int, default=11)
    parser.add_argument("--new-store", action="store_true", help="a new store against one made")
    parser.add_argument("--src", help="with --new-store: another checkout's src/")
    args = parser.parse_args()
    if args.new_store:
        new_store(args.runs, args.repeat, args.src)
        return
    with tempfile.TemporaryDirectory() as tmp:
        db, run_dir = f"{tmp}/p.db", Path(tmp) / "run"
        subprocess.run(
            [VIRTPOLICY, "--db", db, "policy", "set", "web", "--weight", "200"],
            check=True,
            stdout=subprocess.DEVNULL,
        )
        with serve(db, run_dir, "--connect", f"test://{NODE}"):
            time.sleep(1)
            sock = str(run_dir / "virtpolicy.sock")
            commands = {
                "--version": [VIRTPOLICY, "--version"],
                "--server S policy get web": [VIRTPOLICY, "--server", sock, "policy", "get", "web"],
                "--server S status": [VIRTPOLICY, "--server", sock, "status"],
            }
            print(f"{platform.node()}, {os.cpu_count()} CPUs, {time.strftime('%Y-%m-%d')}")
            print("| command | " + " | ".join(f"run {n}" for n in range(1, args.runs + 1)) + " |")
            print("|---|" + "---|" * args.runs)
            medians: dict[str, list[float]] = {name: [] for name in commands}
            for _ in range(args.runs):
                for name, argv in commands.items():
                    medians[name].append(statistics.median(timed(argv) for _ in range(args.repeat)))
            for name, values in medians.items():
                print(f"| `{name}` | " + " | ".join(f"{v * 1000:.0f} ms" for v in values) + " |")


if __name__ == "__main__":
    main()
