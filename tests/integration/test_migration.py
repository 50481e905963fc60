"""Real live migrations between the lab's two libvirtds, a virtpolicy daemon on
each with its hook, one PostgreSQL store (tests/twohosts.py): the policy
follows the guest, both ways."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings

from tests.conftest import (
    NODE,
    Cli,
    Daemon,
    api_client,
    eventually,
    snapshot,
    try_virsh,
    vcpu_affinity,
    virsh,
    wait_connected,
)
from tests.strategies import NASTY_TEXT
from tests.twohosts import Lab, two_hosts_fixture  # noqa: F401 (the fixture)

pytestmark = pytest.mark.integration


@pytest.mark.long
def test_a_guest_migrates_to_host_b_and_back_and_its_policy_follows(
    two_hosts: Callable[[], Lab], make_guest: Callable[..., str]
) -> None:
    """db (a pin and a weight) and web (requires db) run on host-a. ``virtpolicy
    migrate db --to host-b``: on host-b its pin and weight hold, the fleet shows it
    there, both daemons' streams saw it go, and web stays up on host-a (a
    migration is not a stop). Then back, through host-b's daemon."""
    db, web = make_guest("mdb", vcpus=1), make_guest("mweb", vcpus=1)
    env = two_hosts()
    run = env.cli
    assert run("policy", "set", db, "--vcpupin", "0:1", "--weight", "300").exit_code == 0
    policy = {"guest": web, "requires": [{"guest": db}], "stop": {"on_dependency_stop": "stop"}}
    assert run("apply", "-f", "-", input=json.dumps(policy)).exit_code == 0
    virsh("start", db)
    virsh("start", web)
    eventually(lambda: vcpu_affinity(virsh("vcpupin", db)) == {"0": "1"}, 20)
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
    assert vcpu_affinity(env.on_b("vcpupin", db).stdout) == {"0": "1"}
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
    assert vcpu_affinity(virsh("vcpupin", db)) == {"0": "1"}
    eventually(lambda: env.status_host(db) == ["host-a"], 10)
    assert "migrated in" in env.events(env.a, db)
    assert try_virsh("domstate", web).stdout.strip() == "running"


def test_a_dedicated_guest_is_refused_where_there_is_no_room_then_placed_afresh(
    two_hosts: Callable[[], Lab], make_guest: Callable[..., str], tmp_path: Path
) -> None:
    """The lab's hosts have 2 CPUs, one of which stays shared. ded (a dedicated
    vCPU) runs on host-a; host-b's only such CPU is held by hold, a dedicated guest
    defined there. ``virtpolicy migrate`` refuses before anything moves, and so
    does host-b's hook when libvirt is asked directly: ded keeps running on
    host-a as it was. Once hold is gone, ded migrates, host-b places it on CPUs
    of its own, and host-a's placer gives its CPU back to the shared pool."""
    ded = make_guest("mded", vcpus=1)
    env = two_hosts()
    run = env.cli
    hold = "vp-test-mhold"
    for guest in (ded, hold):
        doc = {"guest": guest, "cpu": {"placement": "dedicated"}}
        assert run("apply", "-f", "-", input=json.dumps(doc)).exit_code == 0
    env.define_on_b(hold)
    virsh("start", ded)

    def dedicated(daemon: Daemon, guest: str, host: str | None = None) -> str | None:
        """The CPU of ``guest``'s vCPU 0 when it is placed dedicated (None: not)."""
        view = env.placement(daemon, host)
        placed, room = view["guests"].get(guest), view.get("room") or {}
        return placed["vcpupin"]["0"] if placed and guest in room.get("dedicated", {}) else None

    held = eventually(lambda: dedicated(env.a, hold, "host-b"), 20)
    cpu_a = eventually(lambda: dedicated(env.b, ded, "host-a"), 20)
    eventually(lambda: vcpu_affinity(virsh("vcpupin", ded)) == {"0": cpu_a}, 20)
    eventually(lambda: env.status_host(ded) == ["host-a"], 10)
    before = virsh("dumpxml", ded)

    code, why = env.migrate(env.a, ded, "host-b")
    assert code == 3, why
    assert f"{ded} cannot migrate to host-b: no room on host-b: {ded}: needs 1 dedicated" in why, (
        why
    )
    dry = run("--server", str(env.a.socket), "migrate", ded, "--to", "host-b", "--dry-run")
    assert dry.exit_code == 3, dry.output
    assert dry.output.startswith(f"{ded} to host-b: refused: no room on host-b: {ded}: needs 1")
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
    asked = run("--server", str(env.a.socket), "migrate", ded, "--to", "host-b", "--dry-run")
    assert (asked.exit_code, asked.output) == (0, f"{ded} to host-b: allowed\n")
    code, rows = env.migrate(env.a, ded, "host-b")
    assert code == 0, rows
    assert rows[0]["result"] == "migrated", rows
    cpu_b = eventually(lambda: dedicated(env.b, ded), 20)
    assert cpu_b == held  # the CPU hold had: the only one host-b can give
    eventually(lambda: vcpu_affinity(env.on_b("vcpupin", ded).stdout) == {"0": cpu_b}, 20)
    # host-a: nothing dedicated left; the CPU ded held is shared again.
    eventually(lambda: ded not in env.placement(env.a)["guests"], 20)
    uses = {c["cpu"]: c["use"] for c in env.placement(env.a)["cpus"]}
    assert "vCPU" not in uses[int(cpu_a)], uses


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(guest=NASTY_TEXT, to=NASTY_TEXT)
@example(guest="0", to="0\x850")  # a name may hold a line end (NEL): shown escaped
def test_migrate_any_guest_to_any_host_is_refused_and_changes_nothing(
    start_daemon: Callable[..., Daemon], db: str, guest: str, to: str
) -> None:
    """``virtpolicy migrate`` with arbitrary names, through a daemon on a host alone
    (the test driver): a usage error (2) or the destination's refusal (3) in one
    line, never a traceback, and nothing recorded."""
    daemon = getattr(start_daemon, "one", None)
    if daemon is None:
        daemon = start_daemon.one = start_daemon(db, "--connect", f"test://{NODE}")  # type: ignore[attr-defined]
        wait_connected(daemon)
    run = Cli(db)
    before = snapshot(db)
    done = run("--server", str(daemon.socket), "migrate", guest, "--to", to)
    assert done.exit_code in (2, 3), done.output
    assert done.output.lower().startswith("error: ") or "Usage:" in done.output, done.output
    assert len(done.output.strip().splitlines()) == 1 or "Usage:" in done.output, done.output
    assert snapshot(db) == before
