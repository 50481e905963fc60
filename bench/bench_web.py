"""The web page with 10,000 guests on 50 hosts: first render, bytes, live updates.

Run: tests/lab/chromium up && .venv/bin/python bench/bench_web.py
     [--hosts 50] [--guests 10000] [--loads 5] [--pages 1,5] [--updates 10]
     [--db URL]  (default: an SQLite file; the lab's PostgreSQL with
                  --db "$(tests/lab/postgres url)")

The store gets --guests policies and --hosts hosts that have published their
guests' states and statuses (as their daemons do), written here. One real
`virtpolicy serve` on a test-driver host serves the page; headless Chromium
(Debian's) opens it through a loopback tunnel to the daemon's socket, as a
user's SSH tunnel would. Measured, every run printed:

(a) time to first render of the fleet page, cold (a fresh browser profile
    each load): from navigation start to the first page of the guest table on
    screen (the page's own `vp-fleet-rendered` mark), and its parts;
(b) bytes transferred for it: the document, its assets and its API calls
    (the event stream left out: it stays open);
(c) server CPU per live update per connected page: the daemon's CPU time
    (/proc) over --updates policy writes, each of which every open fleet
    page follows with a reload of its table, with 0 pages and with each
    count in --pages open, the difference divided by updates x pages.

Nothing is asserted.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from virtpolicy.policy.model import parse_policy
from virtpolicy.store import open_store
from virtpolicy.store.base import GuestState, HostRecord, Put
from virtpolicy.testing.tunnel import Tunnel

ROOT = Path(__file__).parents[1]
VIRTPOLICY = Path(sys.executable).parent / "virtpolicy"
NODE = ROOT / "tests" / "integration" / "nodes" / "host4.xml"


def populate(url: str, hosts: int, guests: int) -> None:
    """Policies, hosts and published states, as a fleet's daemons leave them."""
    store = open_store(url)
    now = time.time()
    try:
        per = guests // hosts
        docs = [
            parse_policy(
                {
                    "guest": f"g{h:02d}-{i:04d}",
                    "cpu": {"weight": 100 + i % 50},
                    "labels": {"tier": ("web", "db", "cache")[i % 3], "rack": f"r{h % 5}"},
                }
            )
            for h in range(hosts)
            for i in range(per)
        ]
        for start in range(0, len(docs), 1000):
            store.write([Put(p) for p in docs[start : start + 1000]], "bench")
        for h in range(hosts):
            name = f"host-{h:02d}"
            store.register_host(
                HostRecord(name, "test:///x", 8, {}, "bench", "up", 3600.0, now, "bench")
            )
            seen = []
            for i in range(per):
                guest = f"g{h:02d}-{i:04d}"
                drift = {"vcpupin.0": {"actual": "0-7", "desired": "1"}} if i % 97 == 0 else {}
                status = {
                    "guest": guest,
                    "policy_revision": 1,
                    "state": "running" if i % 10 else "shut off",
                    "desired": {"vcpupin": {}, "emulatorpin": None, "sched": {"cpu_shares": 100}},
                    "actual": {"vcpupin": {}, "emulatorpin": None, "sched": {"cpu_shares": 100}},
                    "drift": drift,
                    "applied": {},
                    "problems": [],
                    "error": None,
                    "checked_at": "2026-11-27T00:00:00Z",
                    "applied_at": None,
                    "notices": [],
                }
                state = "running" if i % 10 else "shut off"
                seen.append(GuestState(guest, name, f"uuid-{guest}", state, {}, now, status))
            store.publish_guests(name, seen, [])
    finally:
        store.close()


def chromium() -> Any:
    from selenium import webdriver  # noqa: PLC0415
    from selenium.webdriver.chrome.service import Service  # noqa: PLC0415

    profile = tempfile.mkdtemp(prefix="vp-bench-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1280,800", f"--user-data-dir={profile}"):  # fmt: skip
        options.add_argument(arg)
    driver = webdriver.Chrome(options=options, service=Service("/usr/bin/chromedriver"))
    driver.profile_dir = profile
    return driver


def close(driver: Any) -> None:
    driver.quit()
    shutil.rmtree(driver.profile_dir, ignore_errors=True)


def first_render(url: str) -> dict[str, float]:
    driver = chromium()
    try:
        driver.get(url + "/")
        deadline = time.monotonic() + 60
        while True:
            found = driver.execute_script(
                "const m = performance.getEntriesByName('vp-fleet-rendered');"
                " return m.length ? m[0].startTime : null"
            )
            if found is not None:
                break
            if time.monotonic() > deadline:
                raise RuntimeError("the fleet page did not render within 60 s")
            time.sleep(0.02)
        timing: dict[str, Any] = driver.execute_script(
            "const n = performance.getEntriesByType('navigation')[0];"
            " const r = performance.getEntriesByType('resource')"
            "   .filter(e => !e.name.includes('/v1/events'));"
            " const api = r.filter(e => e.name.includes('/v1/fleet/guests'))[0];"
            " return {bytes: n.transferSize + r.reduce((s, e) => s + e.transferSize, 0),"
            "   document: n.responseEnd, guests_request: api ? api.duration : null,"
            "   guests_bytes: api ? api.transferSize : null}"
        )
        return {"render_ms": float(found), **timing}
    finally:
        close(driver)


def cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def live_cost(url: str, sock: Path, pid: int, pages: int, updates: int) -> float:
    """Daemon CPU seconds over ``updates`` policy writes with ``pages`` fleet pages open."""
    drivers = [chromium() for _ in range(1 if pages else 0)]
    try:
        if pages:
            driver = drivers[0]
            for n in range(pages):
                if n:
                    driver.switch_to.new_window("tab")
                driver.get(url + "/")
            time.sleep(3)  # every page rendered and following the stream
        with httpx.Client(transport=httpx.HTTPTransport(uds=str(sock)), base_url="http://vp") as c:
            before = cpu_s(pid)
            for n in range(updates):
                r = c.patch("/v1/policies/g00-0001", json={"cpu": {"weight": 200 + n}})
                r.raise_for_status()
                time.sleep(1.5)  # past the page's 0.5 s debounce: one reload per write
            return cpu_s(pid) - before
    finally:
        for d in drivers:
            close(d)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hosts", type=int, default=50)
    parser.add_argument("--guests", type=int, default=10000)
    parser.add_argument("--loads", type=int, default=5)
    parser.add_argument("--pages", default="1,5")
    parser.add_argument("--updates", type=int, default=10)
    parser.add_argument("--db")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="vp-bench-web-"))
    url_db = args.db or f"sqlite:///{work / 'p.db'}"
    began = time.monotonic()
    populate(url_db, args.hosts, args.guests)
    written = time.monotonic() - began
    # A running fleet's rows were not all written in the last seconds: let the
    # ones written here age past the daemon's clock-skew margin (10 s).
    time.sleep(12)
    print(f"{platform.node()}, {time.strftime('%Y-%m-%d')}, {os.cpu_count()} CPUs; "
          f"{args.guests} guests on {args.hosts} hosts in {url_db.split(':')[0]}, "
          f"written in {written:.1f} s")  # fmt: skip
    run_dir = work / "run"
    log = (work / "serve.log").open("w")
    proc = subprocess.Popen(
        [str(VIRTPOLICY), "--db", url_db, "serve", "--run-dir", str(run_dir),
         "--connect", f"test://{NODE}", "--host", "bench-self", "--heartbeat", "60"],
        stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        sock = run_dir / "virtpolicy.sock"
        while not sock.exists():
            time.sleep(0.05)
        with httpx.Client(transport=httpx.HTTPTransport(uds=str(sock)), base_url="http://vp") as c:
            while not c.get("/v1/host").json()["passes"]:  # connected, a first pass done
                time.sleep(0.1)
            t = time.perf_counter()
            page = c.get("/v1/fleet/guests", params={"limit": 100}).json()
            print(f"GET /v1/fleet/guests, the daemon's first (one page of {page['total']}): "
                  f"{(time.perf_counter() - t) * 1000:.0f} ms from here")  # fmt: skip

        time.sleep(3)  # the daemon's start-up work done: a user opens a running daemon's page
        url = Tunnel(sock).url
        loads = [first_render(url) for _ in range(args.loads)]
        for n, load in enumerate(loads, 1):
            print(f"(a, b) load {n}: first render {load['render_ms']:.0f} ms (document "
                  f"{load['document']:.0f} ms, /v1/fleet/guests {load['guests_request']:.0f} ms), "
                  f"{load['bytes'] / 1024:.1f} KiB transferred "
                  f"(the guests' page {load['guests_bytes'] / 1024:.1f} KiB)")  # fmt: skip
        render = statistics.median(x["render_ms"] for x in loads)
        size = statistics.median(x["bytes"] for x in loads) / 1024
        print(f"(a) median {render:.0f} ms; (b) median {size:.1f} KiB")
        idle = live_cost(url, sock, proc.pid, 0, args.updates)
        print(f"(c) {args.updates} updates with no page open: daemon CPU {idle:.2f} s")
        for pages in (int(p) for p in args.pages.split(",")):
            busy = live_cost(url, sock, proc.pid, pages, args.updates)
            per = (busy - idle) / (args.updates * pages)
            print(f"(c) {args.updates} updates with {pages} page(s) open: daemon CPU {busy:.2f} s; "
                  f"{per * 1000:.0f} ms per update per page")  # fmt: skip
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()
        print(json.dumps({"log_tail": (work / "serve.log").read_text()[-300:]})
              if proc.returncode not in (0, -15) else "", end="")  # fmt: skip
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
