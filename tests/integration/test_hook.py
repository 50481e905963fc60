"""libvirt's hook on a real libvirtd: `virsh start` asks virtpolicy first."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import Cli, Daemon, try_virsh, virsh
from virtpolicy.hook.install import install, uninstall

pytestmark = pytest.mark.integration

LAB = Path(__file__).parents[2] / "tests" / "lab" / "libvirtd"
HOOKS = "/etc/libvirt/hooks"


@pytest.fixture
def with_hook(qemu_uri: str) -> Iterator[Callable[[str, str], None]]:
    """Install the hook (run dir, failure mode) and restart libvirtd to load it;
    afterwards remove it and restart again, leaving libvirtd as it was."""
    if not Path("/run/virtpolicy-lab/libvirtd.pid").exists():
        pytest.skip("libvirtd was not started by tests/lab/libvirtd; not touching its hooks")
    installed = False

    def put(run_dir: str, failure: str) -> None:
        nonlocal installed
        install(HOOKS, run_dir, failure)
        installed = True
        subprocess.run([str(LAB), "restart"], check=True, timeout=60)

    yield put
    if installed:
        uninstall(HOOKS)
        subprocess.run([str(LAB), "restart"], check=True, timeout=60)


def wait_connected(daemon: Daemon) -> None:
    """Until the daemon has reconnected to the restarted libvirtd and made a pass."""
    transport = httpx.HTTPTransport(uds=str(daemon.socket))
    deadline = time.monotonic() + 30
    with httpx.Client(transport=transport, base_url="http://vp") as client:
        while True:
            host = client.get("/v1/host").json()
            if host["connected"] and host["passes"] > 0:
                return
            assert time.monotonic() < deadline, host
            time.sleep(0.1)


def test_start_is_refused_until_the_dependency_runs(
    with_hook: Callable[[str, str], None],
    start_daemon: Callable[..., Daemon],
    make_guest: Callable[[str], str],
    qemu_uri: str,
    db: str,
    run: Cli,
) -> None:
    """`virsh start web` with db shut off fails with the reason; with db up it works."""
    dbg, web = make_guest("hdb"), make_guest("hweb")
    run("policy", "set", web, "--requires", dbg)
    daemon = start_daemon(db, "--connect", qemu_uri)
    with_hook(str(daemon.run_dir), "open")
    wait_connected(daemon)
    refused = try_virsh("start", web)
    assert refused.returncode != 0
    assert f"{web} requires {dbg} (running): {dbg} is shut off" in refused.stderr
    assert "Hook script execution failed" in refused.stderr
    assert try_virsh("domstate", web).stdout.strip() == "shut off"
    virsh("start", dbg)
    virsh("start", web)
    assert try_virsh("domstate", web).stdout.strip() == "running"


def test_daemon_down_follows_hook_failure(
    with_hook: Callable[[str, str], None],
    make_guest: Callable[[str], str],
    tmp_path: Path,
    run: Cli,
) -> None:
    """With no daemon answering, hook_failure=closed refuses and open allows."""
    dbg, web = make_guest("fdb"), make_guest("fweb")
    run("policy", "set", web, "--requires", dbg)
    nowhere = str(tmp_path / "no-daemon")
    with_hook(nowhere, "closed")
    refused = try_virsh("start", web)
    assert refused.returncode != 0
    assert f"hook_failure=closed refuses {web}" in refused.stderr
    with_hook(nowhere, "open")
    virsh("start", web)
    assert try_virsh("domstate", web).stdout.strip() == "running"
