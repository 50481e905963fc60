"""`virtpolicy doctor` on real components: each thing it can find off is made
off for real (no hook, a libvirtd older than the hook, a store that does not
answer, a daemon that is not there, a fleet host whose clock is 5 s off), and
named in its output with the fix."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import Cli, Daemon, eventually, wait_connected
from virtpolicy.hook.install import hook_text

pytestmark = pytest.mark.integration

NODES = Path(__file__).parent / "nodes"
FAKETIME = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1"


#: No settings file: the package's, while another test has it installed, is not this test's.
NO_SETTINGS = ("--config", "/dev/null")


def checks(run: Cli, *args: str) -> tuple[int, dict[str, dict[str, object]]]:
    """doctor's exit status and its checks by name (-o json)."""
    answer = run("doctor", "-o", "json", *NO_SETTINGS, *args)
    return answer.exit_code, {c["name"]: c for c in json.loads(answer.stdout)}


def drop_in(hooks: Path, run_dir: Path) -> Path:
    """The hook as a drop-in under ``hooks``, as setup and the package put it."""
    path = hooks / "qemu.d" / "virtpolicy"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(hook_text(str(run_dir), "open", ""))
    path.chmod(0o755)
    return path


def test_doctor_names_each_thing_off_then_exits_0(
    qemu_uri: str,
    db: str,
    run: Cli,
    start_daemon: Callable[..., Daemon],
    tmp_path: Path,
) -> None:
    hooks = tmp_path / "hooks"
    hooks.mkdir()
    daemon = start_daemon(db, "--connect", qemu_uri)
    wait_connected(daemon)
    where = ("--connect", qemu_uri, "--db", db, "--run-dir", str(daemon.run_dir))
    here = ("--hooks-dir", str(hooks))

    # No hook at all.
    status, found = checks(run, *where, *here)
    assert status == 1
    assert not found["hook"]["ok"]
    assert "not installed" in str(found["hook"]["detail"])
    assert found["libvirtd"]["ok"]
    assert f"{qemu_uri} answers: libvirt " in str(found["libvirtd"]["detail"])

    # The hook installed now, after libvirtd started, and no QEMU hook before it:
    # libvirtd has not heard it.
    drop_in(hooks, daemon.run_dir)
    status, found = checks(run, *where, *here)
    assert status == 1
    assert found["hook"]["ok"]
    assert not found["hook heard"]["ok"]
    assert "before the hook" in str(found["hook heard"]["detail"])
    assert "restart libvirtd" in str(found["hook heard"]["fix"])

    # The rest is as it should be. (That the hook is heard once libvirtd has
    # started after it, and doctor then exits 0, is checked with the package
    # installed: tests/integration/test_package.py.)
    assert found["daemon"]["ok"], found["daemon"]
    assert "virtpolicy.sock" in str(found["daemon"]["detail"])
    assert found["store"]["ok"]
    assert [name for name, c in found.items() if not c["ok"]] == ["hook heard"]
    table = run("doctor", *NO_SETTINGS, *where, *here)
    assert table.exit_code == 1
    assert "FIX  hook heard: " in table.stdout

    # A store that does not answer, and no daemon where it is looked for.
    gone = f"postgresql+psycopg://nobody@/virtpolicy?host={tmp_path / 'no-server'}"
    nowhere = ("--run-dir", str(tmp_path / "no-daemon"))
    status, found = checks(run, "--connect", qemu_uri, "--db", gone, *nowhere, *here)
    assert status == 1
    assert not found["store"]["ok"]
    assert "not reachable" in str(found["store"]["detail"])
    assert not found["daemon"]["ok"]
    assert "not running" in str(found["daemon"]["detail"])
    assert "systemctl start virtpolicy" in str(found["daemon"]["fix"])
    shown = run("doctor", *NO_SETTINGS, "--connect", qemu_uri, "--db", gone, *nowhere, *here)
    assert "FIX  store: not reachable" in shown.stdout


def test_doctor_sees_a_fleet_host_whose_clock_is_off(
    pg_db: str, start_daemon: Callable[..., Daemon], tmp_path: Path
) -> None:
    """Two daemons on one store, host-b's clock 5 s behind (libfaketime): doctor
    on host-a names host-b and how far off it is; this host's heartbeat is fine."""
    if not Path(FAKETIME).exists():
        pytest.fail("libfaketime is missing: tests/lab/postgres up installs it")
    run = Cli(pg_db)

    def daemon(x: str, env: dict[str, str] | None = None) -> Daemon:
        node = f"test://{NODES / f'fleet-{x}.xml'}"
        args = ("--connect", node, "--host", f"host-{x}", "--heartbeat", "0.5")
        return start_daemon(pg_db, *args, env=env)

    a = daemon("a")
    daemon("b", {"LD_PRELOAD": FAKETIME, "FAKETIME": "-5s", "DONT_FAKE_MONOTONIC": "1"})
    where = ("--db", pg_db, "--host", "host-a", "--run-dir", str(a.run_dir))
    where += ("--connect", f"test://{NODES / 'fleet-a.xml'}", "--hooks-dir", str(tmp_path))

    def off() -> dict[str, dict[str, object]] | None:
        _status, found = checks(run, *where)
        return found if "host host-b" in found else None

    found = eventually(off, 20)
    assert found["heartbeat"]["ok"], found["heartbeat"]
    host_b = found["host host-b"]
    assert not host_b["ok"]
    assert "s behind this host's" in str(host_b["detail"])
    seconds = float(str(host_b["detail"]).split("its clock is ")[1].split(" s")[0])
    assert 4.0 < seconds < 6.0
