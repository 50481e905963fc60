"""`virtpolicy setup` into a scratch root: what it writes, that running it again
changes nothing, that --dry-run changes nothing, and that --uninstall leaves
the tree as it found it. The group and the user are made by the system's own
groupadd and useradd (--prefix), in the scratch root's /etc."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

from tests.conftest import VIRTPOLICY, Cli
from virtpolicy.hook.install import MARKER

pytestmark = pytest.mark.integration

ACCOUNTS = ("passwd", "group", "shadow", "gshadow", "login.defs")


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """A scratch root with this machine's account files, and nothing else (but
    virtpolicy's own accounts, which the package's tests may have added to this
    machine meanwhile)."""
    if os.geteuid() != 0 or shutil.which("useradd") is None:
        pytest.skip("needs root and useradd (the shadow tools)")
    scratch = tmp_path / "root"
    (scratch / "etc").mkdir(parents=True)
    for name in ACCOUNTS:
        source = Path("/etc", name)
        if not source.exists():
            continue
        target = scratch / "etc" / name
        shutil.copy2(source, target)
        if name != "login.defs":
            lines = source.read_text().splitlines(keepends=True)
            ours = ("virtpolicy:", "virtpolicy-exec:")
            target.write_text("".join(line for line in lines if not line.startswith(ours)))
    return scratch


def tree(root: Path) -> dict[str, tuple[int, bytes]]:
    """Every file and folder under ``root`` with its mode and content, but the
    shadow tools' own backups (``etc/group-``)."""
    found: dict[str, tuple[int, bytes]] = {}
    for path in sorted(root.rglob("*")):
        name = str(path.relative_to(root))
        if name.endswith("-") and name.startswith("etc/"):
            continue
        mode = path.lstat().st_mode
        found[name] = (mode, path.read_bytes() if stat.S_ISREG(mode) else b"")
    return found


def test_setup_dry_run_changes_nothing(root: Path) -> None:
    before = tree(root)
    done = Cli(str(root / "unused.db"))("setup", "--root", str(root), "--dry-run")
    assert done.exit_code == 0, done.output
    assert "would write /etc/systemd/system/virtpolicy.service (mode 0644)" in done.output
    assert "would add the system group virtpolicy" in done.output
    assert tree(root) == before


def test_setup_again_changes_nothing_and_uninstall_leaves_the_tree_as_it_was(
    root: Path,
) -> None:
    run = Cli(str(root / "unused.db"))
    before = tree(root)
    done = run("setup", "--root", str(root))
    assert done.exit_code == 0, done.output
    unit = (root / "etc/systemd/system/virtpolicy.service").read_text()
    assert (
        f"ExecStart={VIRTPOLICY.absolute()} serve --config /etc/virtpolicy/virtpolicy.toml" in unit
    )
    hook = root / "etc/libvirt/hooks/qemu.d/virtpolicy"
    assert MARKER in hook.read_text()
    assert stat.S_IMODE(hook.stat().st_mode) == 0o755
    assert 'socket_group = "virtpolicy"' in (root / "etc/virtpolicy/virtpolicy.toml").read_text()
    groups = [line.split(":")[0] for line in (root / "etc/group").read_text().splitlines()]
    users = [line.split(":") for line in (root / "etc/passwd").read_text().splitlines()]
    assert "virtpolicy" in groups
    assert ["/nonexistent", "/usr/sbin/nologin"] in [
        u[5:7] for u in users if u[0] == "virtpolicy-exec"
    ]
    assert stat.S_IMODE((root / "var/lib/virtpolicy/setup.json").stat().st_mode) == 0o600

    installed = tree(root)
    again = run("setup", "--root", str(root))
    assert again.exit_code == 0, again.output
    assert all(line.startswith("already there: ") for line in again.output.splitlines())
    assert tree(root) == installed

    # An operator's edit of the settings is kept; the rest goes.
    settings = root / "etc/virtpolicy/virtpolicy.toml"
    settings.write_text(settings.read_text() + 'mode = "report"\n')
    undone = run("setup", "--root", str(root), "--uninstall")
    assert undone.exit_code == 0, undone.output
    assert "kept /etc/virtpolicy/virtpolicy.toml: changed since setup wrote it" in undone.output
    settings.unlink()
    settings.parent.rmdir()
    assert tree(root) == before
    assert run("setup", "--root", str(root), "--uninstall").output.startswith("nothing to undo")


def test_the_unit_is_one_systemd_accepts(root: Path) -> None:
    if shutil.which("systemd-analyze") is None:
        pytest.skip("no systemd-analyze")
    assert Cli(str(root / "unused.db"))("setup", "--root", str(root)).exit_code == 0
    unit = root / "etc/systemd/system/virtpolicy.service"
    checked = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", str(unit)],
        capture_output=True,
        text=True,
        check=False,
    )
    # Only warnings about this host may remain (no libvirtd unit in a container).
    problems = [
        line
        for line in checked.stderr.splitlines()
        if "virtpolicy.service" in line and "libvirtd.service" not in line
    ]
    assert problems == [], checked.stderr
