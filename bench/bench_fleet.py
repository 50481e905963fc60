"""A fleet on one PostgreSQL: many daemons on test-driver hosts, whole processes.

Run: sudo tests/lab/postgres up && .venv/bin/python bench/bench_fleet.py
     [--daemons 50] [--guests 200] [--writes 20] [--asks 200] [--heartbeat S]
The same figures for one host on SQLite (no PostgreSQL needed):
     .venv/bin/python bench/bench_fleet.py --sqlite --daemons 1 --guests 200

Each daemon is a `virtpolicy serve` process on a test-driver host of its own
(a node file with --guests running guests, written here), all on the lab's
PostgreSQL (a schema of this run's own). Measured, every figure printed:

(a) a policy write (to the store, from this process) until the pin is live
    on the guest's own host (its daemon's status shows it), p50 and p99;
(b) a write of one policy for every guest of the fleet (one `apply`) until
    every host's daemon has enforced all of its guests, wall time;
(c) a cross-host admission (host 0 asked about a guest whose dependency runs
    on host 1, over the hook's socket), p50 and p99; with one daemon, an
    admission whose dependency runs on the same host;
(d) SIGKILL of one daemon until `virtpolicy hosts` shows it lost;
(e) PostgreSQL connections per daemon (pg_stat_activity) and daemon RSS.

Nothing is asserted.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import httpx
from sqlalchemy import create_engine, text
from sqlalchemy.pool import NullPool

from virtpolicy.engine import changes
from virtpolicy.store import SqlStore

ROOT = Path(__file__).parents[1]
VIRTPOLICY = Path(sys.executable).parent / "virtpolicy"
DOMAIN = """  <domain type="test">
    <name>{name}</name>
    <uuid>{uuid}</uuid>
    <memory>65536</memory>
    <vcpu>2</vcpu>
    <os><type>hvm</type></os>
  </domain>
"""
NODE = """<node>
  <cpu><mhz>2000</mhz><model>x86_64</model><nodes>1</nodes><sockets>1</sockets>
  <cores>8</cores><threads>1</threads><active>8</active><max>8</max></cpu>
  <memory>67108864</memory>
{domains}</node>
"""


def sql(url: str, statement: str) -> list[tuple[object, ...]]:
    engine = create_engine(url, isolation_level="AUTOCOMMIT", poolclass=NullPool)
    with engine.connect() as conn:
        rows = conn.execute(text(statement))
        found = [tuple(r) for r in rows] if rows.returns_rows else []
    engine.dispose()
    return found


def client(sock: Path) -> httpx.Client:
    return httpx.Client(
        transport=httpx.HTTPTransport(uds=str(sock)), base_url="http://vp", timeout=60
    )


def until(check: object, timeout: float, step: float = 0.01) -> float:
    """Seconds until ``check()`` is true (raises after ``timeout``)."""
    start = time.perf_counter()
    while not check():  # type: ignore[operator]
        if time.perf_counter() - start > timeout:
            raise TimeoutError(f"not within {timeout} s")
        time.sleep(step)
    return time.perf_counter() - start


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def cpu_s(pid: int) -> float:
    """CPU seconds (user + system) process ``pid`` has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cpu_each(procs: list[subprocess.Popen[bytes]]) -> list[float]:
    return [cpu_s(p.pid) for p in procs]


def main() -> None:  # noqa: PLR0912, PLR0915 (one straight run, step by step)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--daemons", type=int, default=50)
    parser.add_argument("--guests", type=int, default=200)
    parser.add_argument("--writes", type=int, default=20)
    parser.add_argument("--asks", type=int, default=200)
    parser.add_argument("--heartbeat", type=float, default=None)
    parser.add_argument("--sqlite", action="store_true", help="a SQLite file, not PostgreSQL")
    parser.add_argument(
        "--profile", type=Path, help="py-spy one daemon through (b) into this file (raw stacks)"
    )
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="vp-bench-fleet-"))
    if args.sqlite:
        base, schema, db = "", "", str(work / "policies.db")
    else:
        lab = ROOT / "tests" / "lab" / "postgres"
        base = subprocess.run(
            [str(lab), "url"], capture_output=True, text=True, check=True
        ).stdout.strip()
        schema = f"bench_{uuid.uuid4().hex[:12]}"
        sql(base, f"CREATE SCHEMA {schema}")
        db = f"{base}&options=-csearch_path%3D{schema}"
    env = {**os.environ, "VIRTPOLICY_DB": db}
    print(f"{platform.node()}, {os.cpu_count()} CPUs, {time.strftime('%Y-%m-%d')}, ", end="")
    kind = "SQLite" if args.sqlite else "PostgreSQL"
    print(f"{args.daemons} daemons x {args.guests} guests, {kind}")
    beat = ["--heartbeat", str(args.heartbeat)] if args.heartbeat else []
    procs: list[subprocess.Popen[bytes]] = []
    try:
        subprocess.run(
            [str(VIRTPOLICY), "policy", "list"], env=env, check=True, capture_output=True
        )
        for h in range(args.daemons):
            doms = "".join(
                DOMAIN.format(name=f"h{h}g{g}", uuid=uuid.uuid4()) for g in range(args.guests)
            )
            node = work / f"h{h}.xml"
            node.write_text(NODE.format(domains=doms))
            procs.append(
                subprocess.Popen(
                    [
                        str(VIRTPOLICY),
                        "serve",
                        "--host",
                        f"h{h}",
                        "--connect",
                        f"test://{node}",
                        "--run-dir",
                        str(work / f"run{h}"),
                        "--no-autostart",
                        "--sample-interval",
                        "3600",
                        *beat,
                    ],
                    env=env,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            )
        started = time.perf_counter()

        def hosts() -> list[dict[str, object]]:
            """`virtpolicy hosts -o json`, as a user would ask."""
            out = subprocess.run(
                [str(VIRTPOLICY), "hosts", "-o", "json"],
                env=env,
                capture_output=True,
                text=True,
                check=False,
            )
            found: list[dict[str, object]] = json.loads(out.stdout or "[]")
            return found

        def all_up() -> bool:
            ready = sum(h["state"] == "up" and h["guests"] == args.guests for h in hosts())
            return ready == len(procs)

        until(all_up, 600, 1.0)
        print(f"all daemons up with their guests published: {time.perf_counter() - started:.1f} s")
        time.sleep(5)

        # (a) a write (in this process, as a client of the store) until it is live
        lat = []
        cpu0 = cpu_each(procs)
        store = SqlStore(db)
        near = 1 % args.daemons  # host 1, or the only one
        with client(work / f"run{near}" / "virtpolicy-ro.sock") as api:
            for i in range(args.writes):
                cpu = str(i % 8)
                t = time.perf_counter()
                changes.set_policy(store, f"h{near}g0", {"cpu": {"vcpus": cpu}}, actor="bench")

                def live(cpu: str = cpu) -> bool:
                    got = api.get(f"/v1/guests/h{near}g0/status")
                    return bool(
                        got.status_code == 200 and got.json()["actual"]["vcpupin"].get("0") == cpu
                    )

                until(live, 30)
                lat.append(time.perf_counter() - t)
        store.close()
        used = [b - a for a, b in zip(cpu0, cpu_each(procs), strict=True)]
        print(
            f"(a) write to live on its host: p50 {statistics.median(lat) * 1000:.0f} ms, "
            f"p99 {pct(lat, 0.99) * 1000:.0f} ms (n={len(lat)}); daemon CPU per write: "
            f"{sum(used) / len(lat) * 1000:.0f} ms in all, "
            f"{statistics.median(used) / len(lat) * 1000:.1f} ms median per daemon"
        )

        # (b) one policy for every guest, until every host has enforced all of its own
        docs = "\n---\n".join(
            f'guest: h{h}g{g}\ncpu:\n  vcpus: "{(h + g) % 8}"'
            for h in range(args.daemons)
            for g in range(args.guests)
        )
        (work / "all.yaml").write_text(docs)

        def pass_cpu() -> list[float]:
            """CPU each daemon's reconcile passes have taken so far (their own count)."""
            took = []
            for h in range(len(procs)):
                with client(work / f"run{h}" / "virtpolicy-ro.sock") as api:
                    took.append(api.get("/v1/host").json()["pass_cpu_s"]["all"])
            return took

        passes0 = pass_cpu()
        spy = args.profile and subprocess.Popen(
            [
                *(str(VIRTPOLICY.parent / "py-spy"), "record", "--nonblocking", "-r", "250"),
                *("-f", "raw", "-o", str(args.profile), "-p", str(procs[1].pid)),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        cpu0 = cpu_each(procs)
        t = time.perf_counter()
        subprocess.run(
            [str(VIRTPOLICY), "apply", "-f", str(work / "all.yaml")],
            env=env,
            check=True,
            capture_output=True,
        )
        written = time.perf_counter() - t

        done: set[int] = set()  # hosts whose guests are all enforced: asked no more

        def enforced() -> bool:
            for h in set(range(args.daemons)) - done:
                with client(work / f"run{h}" / "virtpolicy-ro.sock") as api:
                    rows = api.get("/v1/status", params={"host": f"h{h}"}).json()
                ok = sum(
                    1
                    for r in rows
                    if not r["drift"] and r["actual"]["vcpupin"] and r["policy_revision"]
                )
                if ok >= args.guests:
                    done.add(h)
            return len(done) == args.daemons

        until(enforced, 900, 1.0)
        wall = time.perf_counter() - t
        used = [b - a for a, b in zip(cpu0, cpu_each(procs), strict=True)]
        in_passes = [b - a for a, b in zip(passes0, pass_cpu(), strict=True)]
        if spy:
            spy.send_signal(signal.SIGINT)
            spy.wait()
        print(
            f"(b) {args.daemons * args.guests} policies written ({written:.1f} s) until all "
            f"enforced on their hosts: {wall:.1f} s; daemon CPU: {sum(used):.1f} s in all, "
            f"per daemon median {statistics.median(used):.2f} s, max {max(used):.2f} s; "
            f"of it in reconcile passes (the daemon's own count): median "
            f"{statistics.median(in_passes):.2f} s, max {max(in_passes):.2f} s"
        )

        # (c) cross-host admission
        subprocess.run(
            [str(VIRTPOLICY), "policy", "set", "h0g1", "--requires", f"h{near}g{near or 2}"],
            env=env,
            check=True,
            capture_output=True,
        )
        asks = []
        with client(work / "run0" / "virtpolicy-hook.sock") as hook:
            until(lambda: hook.get("/v1/guests/h0g1/admission").json().get("allowed"), 30)
            for _ in range(args.asks):
                t = time.perf_counter()
                hook.get("/v1/guests/h0g1/admission").raise_for_status()
                asks.append(time.perf_counter() - t)
        print(
            f"(c) cross-host admission: p50 {statistics.median(asks) * 1000:.1f} ms, "
            f"p99 {pct(asks, 0.99) * 1000:.1f} ms (n={len(asks)})"
        )

        # (e) connections and memory, before anything is killed
        rss = [rss_mib(p.pid) for p in procs]
        if not args.sqlite:
            conns = sql(
                base,
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                " AND application_name NOT LIKE 'psql%' AND pid <> pg_backend_pid()",
            )[0][0]
            print(
                f"(e) PostgreSQL connections: {conns} for {len(procs)} daemons "
                f"({int(conns) / len(procs):.2f} each)"  # type: ignore[call-overload]
            )
        print(f"(e) daemon RSS median {statistics.median(rss):.0f} MiB, max {max(rss):.0f} MiB")
        held, decoded = [], []
        for h in range(len(procs)):
            with client(work / f"run{h}" / "virtpolicy-ro.sock") as api:
                counts = api.get("/v1/host").json().get("policies", {})
            held.append(counts.get("held", 0))
            decoded.append(counts.get("decoded", 0))
        print(
            f"(e) policies held per daemon: median {statistics.median(held):.0f}, "
            f"max {max(held)}; decoded since start: median {statistics.median(decoded):.0f}, "
            f"max {max(decoded)}"
        )

        # (d) SIGKILL until lost, read from the store as `virtpolicy hosts` does (in
        # this process: a CLI process's own start-up on a loaded machine is not the
        # fleet's); and any live host shown lost meanwhile (a heartbeat that was late)
        victim = procs[-1]
        victim.send_signal(signal.SIGKILL)
        victim.wait()
        t = time.perf_counter()
        reader = SqlStore(db)
        wrongly: set[str] = set()

        def lost() -> bool:
            now = time.time()
            shown = {h.name: h.shown_state(now) for h in reader.hosts()}
            wrongly.update(
                n for n, st in shown.items() if st == "lost" and n != f"h{len(procs) - 1}"
            )
            return shown.get(f"h{len(procs) - 1}") == "lost"

        seen = until(lost, 600, 0.1)
        reader.close()
        beats = args.heartbeat or (60.0 if args.sqlite else 2.0)
        print(
            f"(d) SIGKILL to lost: {seen:.1f} s (heartbeat {beats:g} s); "
            f"live hosts shown lost meanwhile: {len(wrongly)}"
        )
    finally:
        for p in procs:
            if p.poll() is None:
                p.terminate()
        for p in procs:
            p.wait()
        if schema:
            sql(base, f"DROP SCHEMA {schema} CASCADE")


if __name__ == "__main__":
    main()
