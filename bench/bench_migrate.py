"""Live migration with a policy, on the lab's two libvirtds (run as root).

Run: sudo sh -c 'tests/lab/libvirtd up && tests/lab/second-libvirtd up && tests/lab/postgres up'
     .venv/bin/python bench/bench_migrate.py [--rounds 5]

A diskless QEMU guest (1 vCPU, 64 MiB, TCG) with a pin and a weight, a daemon
on each libvirtd (host-a, host-b; the default heartbeat of a PostgreSQL
store, 2 s) with the hook on both, one PostgreSQL store in a schema of its
own. First, as a baseline without virtpolicy (no daemon, no hook), each round
migrates it a -> b and back with `virsh migrate --live --p2p --persistent
--undefinesource` (what virtpolicy asks libvirt for) over the same kind of
stream. Then, with the daemons and hooks, each round migrates it a -> b,
then b -> a, with `virtpolicy migrate`, and reports for each way: the
command's wall time, libvirt's migration as the job's step says it, the time
until the destination's daemon shows the policy in place (pin and weight
read back, no drift), and until the fleet's status (the store) shows the
guest on the destination. Every run is printed. Nothing is asserted.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import create_engine
from sqlalchemy.pool import NullPool

from virtpolicy.hook.install import install

HERE = Path(__file__).resolve().parents[1]
VIRTPOLICY = Path(sys.executable).parent / "virtpolicy"
SECOND = HERE / "tests" / "lab" / "second-libvirtd"
PG = "postgresql+psycopg://postgres@/virtpolicy?host=/run/virtpolicy-lab-pg&port=5432"
GUEST = "vp-bench-mig"
XML = f"""<domain type='qemu'><name>{GUEST}</name><memory unit='MiB'>64</memory><vcpu>1</vcpu>
<os><type arch='x86_64' machine='pc'>hvm</type><boot dev='network'/></os>
<devices><console type='pty'/></devices></domain>"""
HOOKS = {"a": Path("/run/virtpolicy-lab/hooks"), "b": Path("/run/virtpolicy-lab2/hooks")}


def lab2(what: str) -> str:
    return subprocess.run(
        [str(SECOND), what], capture_output=True, text=True, check=True
    ).stdout.strip()


def virsh(uri: str, *args: str, check: bool = True) -> str:
    done = subprocess.run(
        ["virsh", "-q", "-c", uri, *args], capture_output=True, text=True, check=False
    )
    if check and done.returncode != 0:
        raise SystemExit(f"virsh {' '.join(args)}: {done.stderr.strip()}")
    return done.stdout


def api(sock: Path, path: str) -> Any:
    with httpx.Client(transport=httpx.HTTPTransport(uds=str(sock)), base_url="http://vp") as c:
        return c.get(path).json()


def until(check: Any, limit: float = 30.0) -> float:
    """Seconds until ``check()`` holds (polled every 20 ms)."""
    t0 = time.monotonic()
    while not check():
        if time.monotonic() - t0 > limit:
            raise SystemExit("timed out")
        time.sleep(0.02)
    return time.monotonic() - t0


def one_way(db: str, via: Path, dest: Path, to: str) -> dict[str, float]:
    t0 = time.monotonic()
    command = [str(VIRTPOLICY), "--db", db, "--server", str(via), "migrate", GUEST, "--to", to]
    done = subprocess.run([*command, "-o", "json"], capture_output=True, text=True, check=False)
    wall = time.monotonic() - t0
    if done.returncode != 0:
        raise SystemExit(f"migrate: {done.stdout}{done.stderr}")
    step = json.loads(done.stdout)[0]
    libvirt_s = float(re.search(r"in ([0-9.]+) s", step["detail"]).group(1))  # type: ignore[union-attr]

    def enforced() -> bool:
        status = api(dest, f"/v1/guests/{GUEST}/status")
        actual, desired = status.get("actual") or {}, status.get("desired") or {}
        return (
            actual.get("vcpupin") == {"0": "1"}
            and (actual.get("sched") or {}).get("cpu_shares")
            == (desired.get("sched") or {}).get("cpu_shares")
            and not status.get("drift")
        )

    def listed() -> bool:
        rows = json.loads(
            subprocess.run(
                [str(VIRTPOLICY), "--db", db, "status", GUEST, "-o", "json"],
                capture_output=True,
                text=True,
                check=True,
            ).stdout
        )
        return [r["host"] for r in rows if r.get("state") == "running"] == [to]

    policy_s = wall + until(enforced)
    fleet_s = time.monotonic() - t0 + until(listed)
    return {
        "wall_s": wall,
        "libvirt_s": libvirt_s,
        "policy_s": policy_s,
        "fleet_s": fleet_s,
    }


def plain(uri_a: str, uri_b: str, peer: str, work: Path, rounds: int) -> None:
    """``virsh migrate`` both ways, no daemon and no hook: libvirt's own time."""
    flags = ["--live", "--p2p", "--persistent", "--undefinesource"]
    times: dict[str, list[float]] = {"a -> b": [], "b -> a": []}
    virsh(uri_a, "start", GUEST)
    for _ in range(rounds):
        for way, src, dest, stream in (("a -> b", uri_a, uri_b, "b"), ("b -> a", uri_b, peer, "a")):
            t0 = time.monotonic()
            virsh(
                src, "migrate", *flags, GUEST, dest, "--migrateuri", f"unix://{work}/{stream}.plain"
            )
            times[way].append(time.monotonic() - t0)
    virsh(uri_a, "destroy", GUEST)
    for way, runs in times.items():
        print(f"virsh migrate {way} (no virtpolicy): " + ", ".join(f"{t:.2f}" for t in runs) + " s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    uri_a, uri_b, peer = "qemu:///system", lab2("uri"), lab2("peer-uri")
    schema = f"bench_{uuid.uuid4().hex[:12]}"
    admin = create_engine(PG, isolation_level="AUTOCOMMIT", poolclass=NullPool)
    with admin.connect() as conn:
        conn.exec_driver_sql(f"CREATE SCHEMA {schema}")
    db = f"{PG}&options=-csearch_path%3D{schema}"
    work = Path(tempfile.mkdtemp(prefix="vp-bmig-"))
    daemons: list[subprocess.Popen[bytes]] = []
    try:
        for uri in (uri_a, uri_b):
            virsh(uri, "destroy", GUEST, check=False)
            virsh(uri, "undefine", GUEST, check=False)
        (work / "g.xml").write_text(XML)
        virsh(uri_a, "define", str(work / "g.xml"))
        plain(uri_a, uri_b, peer, work, args.rounds)
        subprocess.run([str(VIRTPOLICY), "--db", db, "policy", "set", GUEST, "--vcpupin", "0:1",
                        "--weight", "300"], check=True, capture_output=True)  # fmt: skip
        socks = {}
        for name, uri, publish in (("a", uri_a, peer), ("b", uri_b, uri_b)):
            run_dir = work / name
            run_dir.mkdir()
            log = (work / f"{name}.log").open("w")
            daemons.append(subprocess.Popen(
                [str(VIRTPOLICY), "--db", db, "serve", "--connect", uri, "--host", f"host-{name}",
                 "--run-dir", str(run_dir), "--migration-uri", publish,
                 "--migration-stream", f"unix://{work}/{name}.stream"],
                stdout=log, stderr=subprocess.STDOUT,
            ))  # fmt: skip
            socks[name] = run_dir / "virtpolicy.sock"
            install(str(HOOKS[name] / GUEST), str(run_dir), "closed")
        for sock in socks.values():
            until(lambda s=sock: s.exists() and api(s, "/v1/host").get("connected"))
        virsh(uri_a, "start", GUEST)
        until(lambda: "1" in virsh(uri_a, "vcpupin", GUEST).split()[-1:])
        ways = {"a -> b": [], "b -> a": []}  # type: dict[str, list[dict[str, float]]]
        for r in range(args.rounds):
            ways["a -> b"].append(one_way(db, socks["a"], socks["b"], "host-b"))
            ways["b -> a"].append(one_way(db, socks["b"], socks["a"], "host-a"))
            said = [
                f"{w} " + ", ".join(f"{k} {v[-1][k]:.2f}" for k in v[-1]) for w, v in ways.items()
            ]
            print(f"round {r + 1}: " + "; ".join(said), flush=True)
        keys = ["wall_s", "libvirt_s", "policy_s", "fleet_s"]
        print("\n| way | " + " | ".join(keys) + " |")
        print("|---|" + "---|" * len(keys))
        for way, runs in ways.items():
            cells = [", ".join(f"{run[k]:.2f}" for run in runs) for k in keys]
            print(f"| {way} | " + " | ".join(cells) + " |")
    finally:
        for proc in daemons:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=20)
        for uri in (uri_a, uri_b):
            virsh(uri, "destroy", GUEST, check=False)
            virsh(uri, "undefine", GUEST, check=False)
        for hooks in HOOKS.values():
            shutil.rmtree(hooks / GUEST, ignore_errors=True)
        with admin.connect() as conn:
            conn.exec_driver_sql(f"DROP SCHEMA {schema} CASCADE")
        for name in ("a", "b"):  # kept for a look after a run that went wrong
            shutil.copy(work / f"{name}.log", f"/tmp/bench-migrate-{name}.log")
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
