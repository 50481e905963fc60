"""`--server`: every command through the daemon's API prints the same and exits
the same as in-process."""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import NODE, Cli, Daemon, eventually

pytestmark = pytest.mark.integration

EXAMPLES = Path(__file__).parents[2] / "examples" / "policies.yaml"
TIME = re.compile(r"\d{4}-\d\d-\d\dT[\d:.]+Z")


@pytest.fixture
def socket_path(tmp_path: Path, start_daemon: Callable[..., Daemon]) -> Path:
    return start_daemon(
        str(tmp_path / "daemon.db"), "--connect", f"test://{NODE}", "--host", "test-host"
    ).socket


SCRIPT: list[list[str]] = [
    ["apply", "-f", str(EXAMPLES)],
    ["apply", "-f", str(EXAMPLES)],
    ["policy", "list"],
    ["policy", "list", "--label", "tier=data", "-o", "json"],
    ["policy", "get", "web"],
    ["policy", "get", "web", "-o", "json"],
    ["policy", "set", "web", "--weight", "300", "--clear", "start.delay", "--label", "canary=yes"],
    ["policy", "set", "web", "--weight", "0"],
    ["policy", "set", "web", "--weight", "5", "--if-revision", "1"],
    ["policy", "set", "db", "--wants", "web"],
    ["policy", "history", "web"],
    ["policy", "diff", "web", "1"],
    ["policy", "diff", "web", "9"],
    ["plan", "start", "--all", "-o", "json"],
    ["plan", "stop", "db"],
    ["export"],
    ["policy", "delete", "batch", "--if-revision", "1"],
    ["policy", "get", "batch"],
    ["policy", "delete", "nope"],
]


def test_same_output_and_status_through_the_api(socket_path: Path, tmp_path: Path) -> None:
    """Each command gives the same output and exit status with --server as without."""
    local = Cli(str(tmp_path / "local.db"))
    for args in SCRIPT:
        here = local(*args)
        there = Cli(str(tmp_path / "unused.db"))("--server", str(socket_path), *args)
        assert (there.exit_code, TIME.sub("T", there.output)) == (
            here.exit_code,
            TIME.sub("T", here.output),
        ), args
    assert not (tmp_path / "unused.db").exists()


def test_apply_dry_run_through_the_api(socket_path: Path, tmp_path: Path) -> None:
    """A dry run through the API shows the same diffs and writes nothing."""
    remote = Cli(str(tmp_path / "unused.db"))
    remote("--server", str(socket_path), "apply", "-f", str(EXAMPLES))
    changed = tmp_path / "c.yaml"
    changed.write_text("guest: db\ncpu: {weight: 500}\n")
    result = remote(
        "--server", str(socket_path), "apply", "-f", str(changed), "--dry-run", "--prune"
    )
    assert "--- db@1\n+++ db@2\n" in result.output
    assert result.output.endswith(
        "dry run, nothing written: 0 created, 1 updated, 4 deleted, 0 unchanged\n"
    )
    listed = remote("--server", str(socket_path), "policy", "list").output
    assert len(listed.splitlines()) == 6


def test_status_table(socket_path: Path, tmp_path: Path) -> None:
    """`status` shows desired vs actual from the daemon: applied pinning, problems."""
    remote = Cli(str(tmp_path / "unused.db"))
    remote("--server", str(socket_path), "policy", "set", "db", "--vcpus", "3", "--weight", "200")
    eventually(lambda: "0:3 1:3" in remote("--server", str(socket_path), "status", "db").output)
    lines = remote("--server", str(socket_path), "status").output.splitlines()
    header = ["GUEST", "HOST", "STATE", "REV", "PINNING", "SCHED", "DRIFT", "PROBLEMS"]
    assert lines[0].split() == header
    assert lines[1].split()[:2] == ["db", "test-host"]
    assert "0:3 1:3" in lines[1]
    assert lines[1].endswith("cpu.weight: not supported by the test driver")


def test_unreachable_server(tmp_path: Path) -> None:
    """A daemon that does not answer is one line and exit 1."""
    result = Cli(str(tmp_path / "x.db"))("--server", str(tmp_path / "no.sock"), "policy", "list")
    assert result.exit_code == 1
    assert result.output.startswith(f"error: cannot reach the daemon at {tmp_path}/no.sock")


IMPORTED = """
import sys
from virtpolicy.cli.main import main
sys.argv = ["virtpolicy", *sys.argv[1:]]
try:
    main()
except SystemExit:
    pass
print("IMPORTED", " ".join(sorted(m for m in sys.modules if m.split(".")[0] in {
    "fastapi", "uvicorn", "sqlalchemy", "alembic", "httpx", "pydantic", "libvirt", "rich"
} or m.startswith(("virtpolicy.api", "virtpolicy.engine.daemon.controller", "virtpolicy.store.sql")))))
"""


@pytest.mark.parametrize(
    ("args", "allowed"),
    [
        (["--version"], set()),
        (["--server", "/nonexistent.sock", "status"], set()),
        (["--server", "/nonexistent.sock", "policy", "get", "web"], set()),
    ],
)
def test_client_commands_import_no_server(args: list[str], allowed: set[str]) -> None:
    """A command through the daemon imports neither the server nor the store (nor httpx,
    rich or libvirt), nor pydantic: the daemon renders what they print."""
    proc = subprocess.run(
        [sys.executable, "-c", IMPORTED, *args], capture_output=True, text=True, check=True
    )
    line = proc.stdout.splitlines()[-1].split()
    assert line[0] == "IMPORTED"
    imported = {m if m.startswith("virtpolicy") else m.split(".")[0] for m in line[1:]}
    assert imported <= allowed, imported
