"""What ``virtpolicy setup`` puts in place, and takes away again.

Each part is a :class:`Step`: whether it is there already, what doing it
means (one line, for ``--dry-run`` and the report), doing it, and undoing it.
What a run did is written to a manifest, so that ``--uninstall`` takes away
exactly that and no more: a file the operator changed since is kept (and
said so), a group or user that was there before is left alone.

Everything happens under ``root`` (``/`` on a real host; a scratch directory
in the tests): files are written there, and the group and the user are made
with ``groupadd``/``useradd --prefix``, which edit ``root/etc/group`` and
``root/etc/passwd``.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from virtpolicy.errors import ConfigError
from virtpolicy.hook.install import hook_text
from virtpolicy.places import default_run_dir

GROUP = "virtpolicy"  # its members may use the read-write socket
EXEC_USER = "virtpolicy-exec"  # runs exec: conditions
UNIT = "etc/systemd/system/virtpolicy.service"
SETTINGS = "etc/virtpolicy/virtpolicy.toml"
#: libvirt (6.5 and later) runs every executable file in qemu.d, in name order,
#: after /etc/libvirt/hooks/qemu: another manager's hook stays where it is.
HOOK = "etc/libvirt/hooks/qemu.d/virtpolicy"
MANIFEST = "var/lib/virtpolicy/setup.json"


def executable() -> str:
    """The ``virtpolicy`` this process runs as: the unit starts that one."""
    beside = Path(sys.executable).parent / "virtpolicy"
    found = beside if beside.exists() else shutil.which("virtpolicy")
    if found is None:
        raise ConfigError("setup: cannot find the virtpolicy executable to start from the unit")
    return str(Path(found).absolute())


@dataclass(frozen=True)
class File:
    """A file setup writes (and its mode), unless one is there already."""

    path: str
    text: str
    mode: int

    def describe(self) -> str:
        return f"write /{self.path} (mode {self.mode:04o})"

    def there(self, root: Path) -> bool:
        return (root / self.path).exists()

    def do(self, root: Path) -> str:
        target = root / self.path
        target.parent.mkdir(parents=True, exist_ok=True, mode=0o755)
        tmp = target.with_name(f".{target.name}.virtpolicy-setup")
        tmp.write_text(self.text)
        os.chmod(tmp, self.mode)
        tmp.replace(target)
        return _digest(self.text.encode())

    def undo(self, root: Path, digest: str) -> str:
        target = root / self.path
        if not target.exists():
            return f"/{self.path} is gone already"
        if _digest(target.read_bytes()) != digest:
            return f"kept /{self.path}: changed since setup wrote it"
        target.unlink()
        return f"removed /{self.path}"


@dataclass(frozen=True)
class Account:
    """A system group, or a system user without a home or a shell."""

    kind: str  # "group" or "user"
    name: str

    def describe(self) -> str:
        return f"add the system {self.kind} {self.name}"

    def there(self, root: Path) -> bool:
        table = root / ("etc/group" if self.kind == "group" else "etc/passwd")
        try:
            lines = table.read_text().splitlines()
        except FileNotFoundError:
            return False
        return any(line.split(":", 1)[0] == self.name for line in lines)

    def do(self, root: Path) -> str:
        if self.kind == "group":
            command = ["groupadd", "--system", self.name]
        else:
            command = ["useradd", "--system", "--no-create-home", "--user-group"]
            command += ["--home-dir", "/nonexistent", "--shell", "/usr/sbin/nologin", self.name]
        _run([command[0], "--prefix", str(root), *command[1:]])
        return ""

    def undo(self, root: Path, _digest: str) -> str:
        if not self.there(root):
            return f"the {self.kind} {self.name} is gone already"
        _run(["userdel" if self.kind == "user" else "groupdel", "--prefix", str(root), self.name])
        return f"removed the {self.kind} {self.name}"


Step = File | Account


def unit_text(exec_path: str) -> str:
    """The systemd unit, starting ``exec_path serve``."""
    return template("virtpolicy.service").replace("@EXEC@", exec_path)


def steps(hook_failure: str = "open") -> list[Step]:
    """What a host needs, in the order it is put in place."""
    return [
        Account("group", GROUP),
        Account("user", EXEC_USER),
        File(SETTINGS, template("virtpolicy.toml"), 0o644),
        File(HOOK, hook_text(default_run_dir(), hook_failure, ""), 0o755),
        File(UNIT, unit_text(executable()), 0o644),
    ]


def setup(root: Path, *, dry_run: bool = False, hook_failure: str = "open") -> Iterator[str]:
    """Put in place what is missing; one line for each step."""
    manifest = _manifest(root)
    if not dry_run:
        for folder in _missing_folders(root, MANIFEST):
            manifest[f"dir {folder}"] = ""
    for step in steps(hook_failure):
        key = _key(step)
        if step.there(root):
            yield f"already there: {step.describe().partition(' ')[2]}"
            continue
        if dry_run:
            yield f"would {step.describe()}"
            continue
        if isinstance(step, File):  # the folders it makes go when it goes
            for folder in _missing_folders(root, step.path):
                manifest[f"dir {folder}"] = ""
        manifest[key] = step.do(root)
        _save(root, manifest)  # each step recorded as soon as done
        yield step.describe()
    if not dry_run:
        yield from _next_steps(root)


def uninstall(root: Path, *, dry_run: bool = False) -> Iterator[str]:
    """Take away what setup put in place (its manifest says what), newest first."""
    manifest = _manifest(root)
    if not manifest:
        yield "nothing to undo: setup has put nothing in place here"
        return
    for step in reversed(steps()):
        key = _key(step)
        if key not in manifest:
            continue
        if dry_run:
            yield f"would undo: {step.describe()}"
            continue
        yield step.undo(root, manifest.pop(key))
        _save(root, manifest)
    if dry_run:
        return
    (root / MANIFEST).unlink(missing_ok=True)
    made = [key.removeprefix("dir ") for key in manifest if key.startswith("dir ")]
    for folder in sorted(made, key=len, reverse=True):  # the deepest first
        with contextlib.suppress(OSError):  # kept when something else is in it now
            (root / folder).rmdir()


def _next_steps(root: Path) -> Iterator[str]:
    if root != Path("/"):
        return
    yield "next: systemctl daemon-reload && systemctl enable --now virtpolicy"
    yield (
        "next: libvirtd reads its hooks when it starts: restart it when it suits you "
        "(systemctl restart libvirtd; running guests keep running)"
    )


def _missing_folders(root: Path, path: str) -> list[str]:
    """The folders above ``path`` that are not there yet (relative to ``root``)."""
    missing = []
    for parent in Path(path).parents:
        if str(parent) != "." and not (root / parent).exists():
            missing.append(str(parent))
    return missing


def _key(step: Step) -> str:
    return f"file {step.path}" if isinstance(step, File) else f"{step.kind} {step.name}"


def _manifest(root: Path) -> dict[str, str]:
    path = root / MANIFEST
    try:
        found = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except ValueError as exc:
        raise ConfigError(f"/{MANIFEST}: not what setup writes: {exc}") from None
    if not isinstance(found, dict) or not all(isinstance(v, str) for v in found.values()):
        raise ConfigError(f"/{MANIFEST}: not what setup writes")
    return found


def _save(root: Path, manifest: dict[str, str]) -> None:
    path = root / MANIFEST
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    path.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    os.chmod(path, 0o600)


def template(name: str) -> str:
    """One of the files this package carries for a host (``virtpolicy.system``)."""
    return resources.files("virtpolicy.system").joinpath(name).read_text()


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _run(command: list[str]) -> None:
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        why = (done.stderr or done.stdout).strip().splitlines()
        raise ConfigError(f"setup: {' '.join(command)}: {why[-1] if why else done.returncode}")
