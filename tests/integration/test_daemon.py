"""`virtpolicy serve` as a real process against a real libvirtd with QEMU guests."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import LAB_PIDFILE, Cli, Daemon, eventually, try_virsh, virsh

pytestmark = pytest.mark.integration

LAB = Path(__file__).parents[2] / "tests" / "lab" / "libvirtd"


def live_pins(guest: str) -> dict[int, str]:
    rows = [line.split() for line in virsh("vcpupin", guest, "--live").splitlines() if line.strip()]
    return {int(v): c for v, c in rows}


@pytest.fixture
def daemon(qemu_uri: str, db: str, start_daemon: Callable[..., Daemon]) -> subprocess.Popen[str]:
    """`virtpolicy serve` with a long periodic interval: only events and the
    store watcher can explain a quick reaction."""
    return start_daemon(db, "--connect", qemu_uri, "--reconcile-interval", "3600").proc


def test_store_change_is_enforced_live(
    daemon: subprocess.Popen[str], run: Cli, make_guest: Callable[[str], str]
) -> None:
    """A policy written by another process (the CLI) reaches the running guest."""
    guest = make_guest("dstore")
    virsh("start", guest)
    assert run("policy", "set", guest, "--vcpus", "1").exit_code == 0
    eventually(lambda: live_pins(guest) == {0: "1", 1: "1"})


def test_hand_drift_is_put_back_by_the_tunable_event(
    daemon: subprocess.Popen[str], run: Cli, make_guest: Callable[[str], str]
) -> None:
    """`virsh vcpupin` by hand is undone at once, long before any periodic pass."""
    guest = make_guest("devent")
    virsh("start", guest)
    run("policy", "set", guest, "--vcpus", "1")
    eventually(lambda: live_pins(guest) == {0: "1", 1: "1"})
    virsh("vcpupin", guest, "0", "0-1", "--live")
    eventually(lambda: live_pins(guest) == {0: "1", 1: "1"}, timeout=5)


def test_guest_started_later_gets_its_policy(
    daemon: subprocess.Popen[str], run: Cli, make_guest: Callable[[str], str]
) -> None:
    """A policy for a defined, stopped guest is in its definition before it starts."""
    guest = make_guest("dlater")
    run("policy", "set", guest, "--vcpupin", "1:0")
    eventually(lambda: "<vcpupin vcpu='1' cpuset='0'/>" in virsh("dumpxml", guest, "--inactive"))
    virsh("start", guest)
    assert live_pins(guest)[1] == "0"


@pytest.mark.alone("libvirtd")
@pytest.mark.parametrize("how", ["restart", "crash"])
def test_libvirtd_restart_is_survived(
    how: str, daemon: subprocess.Popen[str], run: Cli, make_guest: Callable[[str], str]
) -> None:
    """libvirtd stopped or killed, then started: the daemon reconnects and keeps enforcing."""
    if not LAB_PIDFILE.exists():
        pytest.skip("libvirtd was not started by tests/lab/libvirtd; not restarting someone else's")
    guest = make_guest(f"d{how}")
    virsh("start", guest)
    run("policy", "set", guest, "--vcpus", "0")
    eventually(lambda: live_pins(guest) == {0: "0", 1: "0"})
    subprocess.run([str(LAB), how], check=True, timeout=60)
    assert daemon.poll() is None, "the daemon died with libvirtd"
    # A change made while reconnecting, and drift made right after, both land.
    run("policy", "set", guest, "--vcpus", "1")
    eventually(lambda: live_pins(guest) == {0: "1", 1: "1"}, timeout=30)
    virsh("vcpupin", guest, "1", "0", "--live")
    eventually(lambda: live_pins(guest) == {0: "1", 1: "1"}, timeout=10)
    assert daemon.poll() is None
    assert try_virsh("domstate", guest).stdout.strip() == "running"
    assert LAB_PIDFILE.exists()


@pytest.mark.parametrize("on_stop", ["none", "stop"])
def test_dependency_stop_is_noted_and_acted_on(
    on_stop: str,
    qemu_uri: str,
    db: str,
    run: Cli,
    start_daemon: Callable[..., Daemon],
    make_guest: Callable[[str], str],
) -> None:
    """When a required dependency is destroyed, its running dependent gets a notice
    on its status, and is stopped too if its policy says on_dependency_stop: stop."""
    import httpx  # noqa: PLC0415

    dbg, web = make_guest(f"sdb{on_stop}"), make_guest(f"sweb{on_stop}")
    virsh("start", dbg)
    virsh("start", web)
    # A diskless guest has no OS to answer an ACPI shutdown: destroy it.
    run("policy", "set", web, "--requires", dbg, "--stop-action", "destroy")
    daemon = start_daemon(db, "--connect", qemu_uri, "--reconcile-interval", "3600")
    client = httpx.Client(
        transport=httpx.HTTPTransport(uds=str(daemon.socket)), base_url="http://vp"
    )
    if on_stop == "stop":  # no CLI flag for it yet: a merge patch through the API
        assert (
            client.patch(
                f"/v1/policies/{web}", json={"stop": {"on_dependency_stop": "stop"}}
            ).status_code
            == 200
        )
    eventually(lambda: client.get(f"/v1/guests/{web}/status").status_code == 200)
    virsh("destroy", dbg)
    notices = eventually(lambda: client.get(f"/v1/guests/{web}/status").json()["notices"])
    assert f"required dependency {dbg} stopped" in notices[-1]
    if on_stop == "stop":
        eventually(lambda: try_virsh("domstate", web).stdout.strip() == "shut off")
    else:  # decided with the notice: no stop job was, or will be, made for it
        assert "stopping this guest" not in notices[-1]
        assert client.get("/v1/jobs").json() == []
        assert try_virsh("domstate", web).stdout.strip() == "running"
    client.close()
