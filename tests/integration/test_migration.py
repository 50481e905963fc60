"""Real live migrations between the lab's two libvirtds (tests/lab/libvirtd and
tests/lab/second-libvirtd), a virtpolicy daemon on each with its hook, one
PostgreSQL store: the policy follows the guest, both ways."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import (
    GUEST_XML,
    Cli,
    Daemon,
    GuestHooks,
    api_client,
    eventually,
    try_virsh,
    virsh,
    wait_connected,
)
from virtpolicy.hook.install import install

pytestmark = pytest.mark.integration

SECOND = Path(__file__).parents[1] / "lab" / "second-libvirtd"
#: The second libvirtd's own hook runs SECOND_HOOKS/GUEST/qemu for a guest.
SECOND_HOOKS = Path(os.environ.get("LAB2_STATE", "/run/virtpolicy-lab2")) / "hooks"


def lab2(*args: str) -> str:
    return subprocess.run(
        [str(SECOND), *args], capture_output=True, text=True, check=True
    ).stdout.strip()


@dataclass
class Lab:
    """The two hosts: each daemon, its libvirtd's URI, and the hook in place for
    the test's guests on both."""

    a: Daemon
    b: Daemon
    uri_a: str
    uri_b: str
    cli: Cli

    def on_b(self, *args: str) -> subprocess.CompletedProcess[str]:
        """virsh against the second libvirtd; the caller judges the outcome."""
        return subprocess.run(
            ["virsh", "-q", "-c", self.uri_b, *args],
            capture_output=True, text=True, check=False, timeout=60,
        )  # fmt: skip

    def migrate(self, via: Daemon, guest: str, to: str) -> Any:
        """``virtpolicy migrate GUEST --to TO`` through ``via``'s daemon: (exit status,
        its JSON or its error)."""
        done = self.cli("--server", str(via.socket), "migrate", guest, "--to", to, "-o", "json")
        return done.exit_code, json.loads(done.stdout) if done.exit_code == 0 else done.output

    def status_host(self, guest: str) -> list[str]:
        """The hosts the fleet's status shows ``guest`` running on."""
        rows = json.loads(self.cli("status", guest, "-o", "json").stdout)
        return [r["host"] for r in rows if r.get("state") == "running"]

    def events(self, daemon: Daemon, guest: str) -> list[str]:
        with api_client(daemon.socket) as c:
            seen = c.get("/v1/events/recent", params={"kind": "lifecycle"}).json()
        return [e["event"] for e in reversed(seen) if e.get("guest") == guest]

    def placement(self, daemon: Daemon, host: str | None = None) -> dict[str, Any]:
        with api_client(daemon.socket) as c:
            got = c.get("/v1/placement", params={"host": host} if host else {})
        assert got.status_code == 200, got.text
        found: dict[str, Any] = got.json()
        return found


@pytest.fixture
def lab(
    pg_db: str,
    start_daemon: Callable[..., Daemon],
    qemu_uri: str,
    guest_hooks: GuestHooks,
    with_hook: Callable[..., None],
    short_dir: Callable[[], Path],
) -> Iterator[Callable[..., Lab]]:
    """``lab(*b_args)``: a daemon on each libvirtd (host-a, host-b), each publishing
    how to migrate guests to it (its libvirtd's socket as the other sees it, a
    UNIX socket for QEMU's stream), and the hook on both for the test's guests."""
    if subprocess.run([str(SECOND), "status"], check=False).returncode != 0:
        if os.environ.get("VIRTPOLICY_REQUIRE_LAB"):
            pytest.fail("the second libvirtd does not answer: tests/lab/second-libvirtd up")
        pytest.skip("no second libvirtd (tests/lab/second-libvirtd up)")
    uri_b, peer = lab2("uri"), lab2("peer-uri")
    streams = Path(tempfile.mkdtemp(prefix="vp-mig-"))
    hooked: list[str] = []

    def up(*b_args: str) -> Lab:
        beat = ("--heartbeat", "0.5")
        a = start_daemon(
            pg_db,
            "--connect",
            qemu_uri,
            "--host",
            "host-a",
            *beat,
            "--migration-uri",
            peer,
            "--migration-stream",
            f"unix://{streams}/a",
        )
        b = start_daemon(pg_db, "--connect", uri_b, "--host", "host-b", *beat,
                         "--migration-uri", uri_b, "--migration-stream", f"unix://{streams}/b",
                         *b_args)  # fmt: skip
        with_hook(str(a.run_dir), "closed")
        for name in guest_hooks.guests:  # host-b's hook, for the same guests
            install(str(SECOND_HOOKS / name), str(b.run_dir), "closed")
            hooked.append(name)
        wait_connected(a)
        wait_connected(b)
        return Lab(a, b, qemu_uri, uri_b, Cli(pg_db))

    yield up
    for name in hooked:
        shutil.rmtree(SECOND_HOOKS / name, ignore_errors=True)
    listed = subprocess.run(
        ["virsh", "-q", "-c", uri_b, "list", "--all", "--name"],
        capture_output=True, text=True, check=False, timeout=60,
    ).stdout.split()  # fmt: skip
    for name in (n for n in listed if n.startswith("vp-test-")):
        for verb in ("destroy", "undefine"):
            subprocess.run(
                ["virsh", "-q", "-c", uri_b, verb, name], capture_output=True, check=False
            )
    shutil.rmtree(streams, ignore_errors=True)


def vcpupin(run: Callable[..., Any], guest: str) -> dict[str, str]:
    rows = (line.split() for line in run("vcpupin", guest).splitlines() if line.strip())
    return {row[0]: row[-1] for row in rows if re.fullmatch(r"\d+", row[0])}


def test_a_guest_migrates_to_host_b_and_back_and_its_policy_follows(
    lab: Callable[..., Lab], make_guest: Callable[..., str]
) -> None:
    """db (a pin and a weight) and web (requires db) run on host-a. ``virtpolicy
    migrate db --to host-b``: on host-b its pin and weight hold, the fleet shows it
    there, both daemons' streams saw it go, and web stays up on host-a (a
    migration is not a stop). Then back, through host-b's daemon."""
    db, web = make_guest("mdb", vcpus=1), make_guest("mweb", vcpus=1)
    env = lab()
    run = env.cli
    assert run("policy", "set", db, "--vcpupin", "0:1", "--weight", "300").exit_code == 0
    policy = {"guest": web, "requires": [{"guest": db}], "stop": {"on_dependency_stop": "stop"}}
    assert run("apply", "-f", "-", input=json.dumps(policy)).exit_code == 0
    virsh("start", db)
    virsh("start", web)
    eventually(lambda: vcpupin(virsh, db) == {"0": "1"}, 20)
    eventually(lambda: env.status_host(db) == ["host-a"], 10)

    code, rows = env.migrate(env.a, db, "host-b")
    assert code == 0, rows
    assert [(r["guest"], r["host"], r["result"]) for r in rows] == [(db, "host-a", "migrated")]
    assert rows[0]["detail"].startswith("to host-b in "), rows
    assert env.on_b("domstate", db).stdout.strip() == "running"
    # Moved whole: defined on host-b now, not on host-a.
    assert env.on_b("dominfo", db).stdout.count("Persistent:     yes") == 1
    assert try_virsh("domstate", db).returncode != 0

    def enforced(daemon: Daemon) -> dict[str, Any] | None:
        with api_client(daemon.socket) as c:
            got = c.get(f"/v1/guests/{db}/status")
        status: dict[str, Any] = got.json() if got.status_code == 200 else {}
        ok = status.get("actual", {}).get("vcpupin") == {"0": "1"} and not status.get("drift")
        return status if ok else None

    status = eventually(lambda: enforced(env.b), 20)
    assert status["actual"]["sched"]["cpu_shares"] == status["desired"]["sched"]["cpu_shares"]
    assert vcpupin(lambda *a: env.on_b(*a).stdout, db) == {"0": "1"}
    shares = env.on_b("schedinfo", db).stdout
    assert re.search(rf"cpu_shares\s*:\s*{status['desired']['sched']['cpu_shares']}\b", shares)
    eventually(lambda: env.status_host(db) == ["host-b"], 10)
    assert "migrated in" in eventually(lambda: env.events(env.b, db) or None, 10)
    assert "migrated out" in env.events(env.a, db)
    # web required db and stops when it stops: a migration is not a stop.
    assert try_virsh("domstate", web).stdout.strip() == "running"
    assert "stopped" not in env.events(env.a, web)

    code, rows = env.migrate(env.b, db, "host-a")
    assert code == 0, rows
    assert [(r["guest"], r["host"], r["result"]) for r in rows] == [(db, "host-b", "migrated")]
    assert try_virsh("domstate", db).stdout.strip() == "running"
    assert env.on_b("domstate", db).returncode != 0
    eventually(lambda: enforced(env.a), 20)
    assert vcpupin(virsh, db) == {"0": "1"}
    eventually(lambda: env.status_host(db) == ["host-a"], 10)
    assert "migrated in" in env.events(env.a, db)
    assert try_virsh("domstate", web).stdout.strip() == "running"


def test_a_dedicated_guest_is_refused_where_there_is_no_room_then_placed_afresh(
    lab: Callable[..., Lab], make_guest: Callable[..., str], tmp_path: Path
) -> None:
    """The lab's hosts have 2 CPUs, one of which stays shared. ded (a dedicated
    vCPU) runs on host-a; host-b's only such CPU is held by hold, a dedicated guest
    defined there. ``virtpolicy migrate`` refuses before anything moves, and so
    does host-b's hook when libvirt is asked directly: ded keeps running on
    host-a as it was. Once hold is gone, ded migrates, host-b places it on CPUs
    of its own, and host-a's placer gives its CPU back to the shared pool."""
    ded = make_guest("mded", vcpus=1)
    env = lab()
    run = env.cli
    hold = "vp-test-mhold"
    for guest in (ded, hold):
        doc = {"guest": guest, "cpu": {"placement": "dedicated"}}
        assert run("apply", "-f", "-", input=json.dumps(doc)).exit_code == 0
    xml = tmp_path / "hold.xml"
    xml.write_text(GUEST_XML.format(name=hold, vcpus=1, boot="network", disk="", balloon=""))
    assert env.on_b("define", str(xml)).returncode == 0
    virsh("start", ded)

    def dedicated(daemon: Daemon, guest: str, host: str | None = None) -> str | None:
        """The CPU of ``guest``'s vCPU 0 when it is placed dedicated (None: not)."""
        view = env.placement(daemon, host)
        placed, room = view["guests"].get(guest), view.get("room") or {}
        return placed["vcpupin"]["0"] if placed and guest in room.get("dedicated", {}) else None

    held = eventually(lambda: dedicated(env.a, hold, "host-b"), 20)
    cpu_a = eventually(lambda: dedicated(env.b, ded, "host-a"), 20)
    eventually(lambda: vcpupin(virsh, ded) == {"0": cpu_a}, 20)
    eventually(lambda: env.status_host(ded) == ["host-a"], 10)
    before = virsh("dumpxml", ded)

    code, why = env.migrate(env.a, ded, "host-b")
    assert code == 3, why
    assert f"{ded} cannot migrate to host-b: no room on host-b: {ded}: needs 1 dedicated" in why, (
        why
    )
    assert run("--server", str(env.a.socket), "jobs", "-o", "json").stdout.strip() == "[]"
    # Past virtpolicy, host-b's hook refuses it with the same reason.
    direct = try_virsh("migrate", "--live", "--p2p", ded, env.uri_b, "--migrateuri",
                       f"unix://{tmp_path}/direct.sock")  # fmt: skip
    assert direct.returncode != 0
    assert f"{ded}: needs 1 dedicated host CPU" in direct.stderr, direct.stderr
    assert try_virsh("domstate", ded).stdout.strip() == "running"
    assert virsh("dumpxml", ded) == before

    assert env.on_b("undefine", hold).returncode == 0
    eventually(lambda: dedicated(env.a, hold, "host-b") is None, 20)
    code, rows = env.migrate(env.a, ded, "host-b")
    assert code == 0, rows
    assert rows[0]["result"] == "migrated", rows
    cpu_b = eventually(lambda: dedicated(env.b, ded), 20)
    assert cpu_b == held  # the CPU hold had: the only one host-b can give
    eventually(lambda: vcpupin(lambda *a: env.on_b(*a).stdout, ded) == {"0": cpu_b}, 20)
    # host-a: nothing dedicated left; the CPU ded held is shared again.
    eventually(lambda: ded not in env.placement(env.a)["guests"], 20)
    uses = {c["cpu"]: c["use"] for c in env.placement(env.a)["cpus"]}
    assert "vCPU" not in uses[int(cpu_a)], uses
