"""Store benchmark: apply, get and plan with 10,000 policies.

Run: .venv/bin/python bench/bench_store.py [--guests N] [--seed S]

Generates N policies whose dependencies form a seeded random DAG (each guest
requires or wants up to three earlier guests), then measures:

- ``apply -f`` of all of them into an empty store, as a separate process
  (wall time and peak RSS of that process), plus the in-process split into
  parsing/validation and the store write;
- ``policy get`` latency with N stored: in-process (``store.get``) and as a
  whole CLI process (interpreter start-up included);
- ``plan start --all``: in-process (``planning.plan``) and as a CLI process.

Prints a Markdown table for bench/README.md. Nothing here is asserted.
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import yaml

from virtpolicy.engine import planning
from virtpolicy.policy.document import parse_documents
from virtpolicy.store import Put, SqlStore

VIRTPOLICY = Path(sys.executable).parent / "virtpolicy"


def make_policies(n: int, seed: int) -> list[dict[str, object]]:
    """N policy documents with a random DAG of dependencies."""
    rng = random.Random(seed)
    docs: list[dict[str, object]] = []
    for i in range(n):
        doc: dict[str, object] = {"guest": f"vm{i:05d}"}
        first = rng.randrange(0, 60)
        doc["cpu"] = {
            "vcpupin": {0: str(first), 1: f"{first + 1}-{first + 3}"},
            "weight": rng.choice([50, 100, 200, 400]),
        }
        if rng.random() < 0.3:
            doc["cpu"]["cap"] = rng.choice([50, 100, 200])  # type: ignore[index]
        if i:
            deps = rng.sample(range(max(0, i - 200), i), k=min(i, rng.randint(0, 3)))
            requires = [{"guest": f"vm{d:05d}"} for d in deps[:2]]
            wants = [{"guest": f"vm{d:05d}", "when": f"tcp:vm{d:05d}:80"} for d in deps[2:]]
            if requires:
                doc["requires"] = requires
            if wants:
                doc["wants"] = wants
        doc["labels"] = {"tier": rng.choice(["web", "app", "db"]), "rack": f"r{i % 40}"}
        docs.append(doc)
    return docs


def timed_process(args: list[str]) -> tuple[float, int]:
    """Run a command; return its wall time (s) and peak RSS (KiB)."""
    start = time.perf_counter()
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    elapsed = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{args} failed: {proc.stderr.read().decode() if proc.stderr else ''}")
    return elapsed, usage.ru_maxrss


def repeat(fn: Callable[[], object], times: int) -> list[float]:
    out = []
    for _ in range(times):
        start = time.perf_counter()
        fn()
        out.append(time.perf_counter() - start)
    return out


def ms(values: list[float]) -> str:
    q = statistics.quantiles(values, n=20) if len(values) >= 20 else [max(values)] * 19
    return f"median {statistics.median(values) * 1000:.2f} ms, p95 {q[18] * 1000:.2f} ms"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--guests", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="vp-bench-"))
    docs = make_policies(args.guests, args.seed)
    policy_file = work / "policies.yaml"
    policy_file.write_text(yaml.safe_dump_all(docs, sort_keys=False))
    data = policy_file.read_bytes()
    db = str(work / "cli.db")
    rows: list[tuple[str, str]] = []

    wall, rss = timed_process([str(VIRTPOLICY), "--db", db, "apply", "-f", str(policy_file)])
    rows.append(
        (
            f"apply -f, {args.guests} policies (CLI process)",
            f"{wall:.2f} s, peak RSS {rss / 1024:.0f} MiB",
        )
    )

    start = time.perf_counter()
    parsed = parse_documents(data, "bench")
    parse_s = time.perf_counter() - start
    store = SqlStore(str(work / "inproc.db"))
    start = time.perf_counter()
    store.write([Put(d.policy) for d in parsed], "bench")
    write_s = time.perf_counter() - start
    rows.append(("  of which: parse + validate (in-process)", f"{parse_s:.2f} s"))
    rows.append(("  of which: store write, one transaction (in-process)", f"{write_s:.2f} s"))

    wall, _ = timed_process([str(VIRTPOLICY), "--db", db, "apply", "-f", str(policy_file)])
    rows.append(("apply -f again, all unchanged (CLI process)", f"{wall:.2f} s"))

    rng = random.Random(args.seed)
    names = [str(d["guest"]) for d in docs]
    gets = repeat(lambda: store.get(rng.choice(names)), 2000)
    rows.append((f"policy get, {args.guests} stored (in-process)", ms(gets)))
    cli_gets = [
        timed_process([str(VIRTPOLICY), "--db", db, "policy", "get", rng.choice(names)])[0]
        for _ in range(20)
    ]
    rows.append(("policy get (whole CLI process)", ms(cli_gets)))

    plans = repeat(lambda: planning.plan(store, "start", None), 20)
    waves = planning.plan(store, "start", None)
    rows.append((f"plan start --all (in-process), {len(waves)} waves", ms(plans)))
    cli_plans = [
        timed_process([str(VIRTPOLICY), "--db", db, "plan", "start", "--all", "-o", "json"])[0]
        for _ in range(10)
    ]
    rows.append(("plan start --all (whole CLI process)", ms(cli_plans)))
    store.close()

    print(
        f"machine: {platform.node()}, {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} CPUs, Python {platform.python_version()}, {time.strftime('%Y-%m-%d')}"
    )
    print(f"file: {len(data) / 1e6:.1f} MB, {args.guests} documents, seed {args.seed}\n")
    print("| measurement | result |\n|---|---|")
    for name, value in rows:
        print(f"| {name} | {value} |")


if __name__ == "__main__":
    main()
