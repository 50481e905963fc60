"""The Debian package, installed on this machine as an operator would, then
purged: what it puts where, its daemon started as its unit starts it, libvirt
asking that daemon through the drop-in hook, an upgrade, and what remove and
purge leave.

The package is built once per change of its source by ``tests/lab/deb``. These
machines have no systemd as PID 1, so the unit's command line is started here
as systemd would start it (its user, its runtime and state folders, its umask,
a clean environment), and stopped as systemd stops it (SIGTERM).

One test at a time installs the package (the ``package`` lock); libvirtd is
shared with the other tests meanwhile. While the package is installed,
libvirtd runs its drop-in for every guest that starts, the other tests' too:
the package's daemon allows a guest its store has no policy for, and while
that daemon is down the hook lets the start go on at once (the tests set
``RETRY_S=0`` and ``HOOK_FAILURE=open`` in /etc/virtpolicy/hook.conf). The package's guests are its own
(vp-test-pkg-*), and its daemon acts on no guest but those.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shlex
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from tests.conftest import GUEST_HOOKS, api_client, eventually, try_virsh, virsh

pytestmark = [pytest.mark.integration, pytest.mark.alone("package")]

DEB_LAB = Path(__file__).parents[1] / "lab" / "deb"
UNIT = Path("/lib/systemd/system/virtpolicy.service")
RUN = Path("/run/virtpolicy")
STATE = Path("/var/lib/virtpolicy")
HOOK = Path("/etc/libvirt/hooks/qemu.d/virtpolicy")
VENV = Path("/opt/venvs/virtpolicy")
#: systemd's environment for a system service (no variable of the caller's).
UNIT_ENV = {
    "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "LANG": "C.UTF-8",
}


def deb(which: str = "") -> Path:
    """The built package at this source's version (``next``: at N+1)."""
    if os.geteuid() != 0:
        pytest.skip("installing a package needs root")
    found = subprocess.run(
        [str(DEB_LAB), "path", *([which] if which else [])],
        capture_output=True, text=True, check=False, timeout=30,
    )  # fmt: skip
    if found.returncode != 0:
        message = f"the package is not built: {found.stderr.strip()}"
        if os.environ.get("VIRTPOLICY_REQUIRE_LAB") == "1":
            pytest.fail(message)
        pytest.skip(message)
    return Path(found.stdout.strip())


def apt(*args: str) -> subprocess.CompletedProcess[str]:
    """apt-get as an operator runs it (no questions; what the package recommends,
    libvirtd's own Debian packages, is not pulled in over the lab's libvirtd),
    waiting for dpkg's lock: a lab built on a fresh machine (tests/lab/linux-guest)
    may be installing what it needs meanwhile."""
    done = subprocess.run(
        ["apt-get", "-y", "-q", "-o", "DPkg::Lock::Timeout=240", "--no-install-recommends", *args],
        capture_output=True, text=True, check=False, timeout=300,
        env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"},
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    return done


def package_files(path: Path) -> list[str]:
    """Every path the .deb holds, as installed (``/etc/...``)."""
    listing = subprocess.run(
        ["dpkg-deb", "--fsys-tarfile", str(path)], capture_output=True, check=True
    ).stdout
    names = subprocess.run(
        ["tar", "-t"], input=listing, capture_output=True, check=True
    ).stdout.decode()
    return [n.removeprefix(".").rstrip("/") for n in names.splitlines() if n not in ("./", ".")]


@dataclass
class Service:
    """The package's daemon, run from its installed unit as systemd runs it."""

    log: Path
    process: subprocess.Popen[bytes] | None = None
    settings: dict[str, str] = field(default_factory=dict)

    def read_unit(self) -> None:
        self.settings = {}
        section = ""
        for raw in UNIT.read_text().splitlines():
            line = raw.strip()
            if line.startswith("["):
                section = line
            elif section == "[Service]" and "=" in line and not line.startswith("#"):
                key, _, value = line.partition("=")
                self.settings[key] = value

    def start(self) -> None:
        self.read_unit()
        assert "User" not in self.settings, "the test runs the unit's command as root"
        run_dir = Path("/run") / self.settings["RuntimeDirectory"]
        state = Path("/var/lib") / self.settings["StateDirectory"]
        for folder, mode in (
            (run_dir, self.settings["RuntimeDirectoryMode"]),
            (state, self.settings["StateDirectoryMode"]),
        ):
            folder.mkdir(parents=True, exist_ok=True)
            folder.chmod(int(mode, 8))
        umask = self.settings["UMask"]
        env = {**UNIT_ENV, "RUNTIME_DIRECTORY": str(run_dir), "STATE_DIRECTORY": str(state)}
        command = ["/bin/sh", "-c", f'umask {umask} && exec "$@"', "unit"]
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                [*command, *shlex.split(self.settings["ExecStart"])],
                env=env, cwd="/", stdin=subprocess.DEVNULL, stdout=out, stderr=out,
                start_new_session=True,
            )  # fmt: skip

    def stop(self, *, restart: bool = False) -> None:
        """SIGTERM and wait, as systemd stops it; the runtime folder goes unless
        the stop is a restart (``RuntimeDirectoryPreserve=restart``)."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            self.process.wait(timeout=30)
        self.process = None
        if not restart:
            subprocess.run(["rm", "-rf", str(RUN)], check=True)

    def ready(self) -> dict[str, object]:
        """Until the daemon is connected to libvirtd and has made a pass."""

        def connected() -> dict[str, object] | None:
            assert self.process is not None
            assert self.process.poll() is None, self.log.read_text()
            try:
                with api_client(RUN / "virtpolicy-ro.sock", timeout=5) as c:
                    host: dict[str, object] = c.get("/v1/host").json()
            except httpx.TransportError:
                return None
            return host if host["connected"] and host["passes"] else None

        return eventually(connected, 60)


@contextlib.contextmanager
def installed(tmp_path: Path) -> Iterator[Service]:
    """The package at N installed, and whatever happens, purged after (the
    daemon stopped first, as systemd would)."""
    service = Service(tmp_path / "daemon.log")
    auto_update = MAN_DB_AUTO_UPDATE.exists()
    MAN_DB_AUTO_UPDATE.unlink(missing_ok=True)
    try:
        apt("install", str(deb()))
        # The other tests' guests pass through the drop-in too: while this test's
        # daemon is away, they must not wait out the hook's retry. The operator's
        # edit of a conffile, which an upgrade keeps (checked there).
        Path("/etc/virtpolicy/hook.conf").write_text(NO_WAIT)
        yield service
    finally:
        service.stop()
        subprocess.run([str(DEB_LAB), "purge"], check=True, timeout=300)
        if auto_update:
            MAN_DB_AUTO_UPDATE.touch()


#: man-db's flag (its debconf answer man-db/auto-update): while it is there, each
#: install and remove of a package with a manual page rebuilds the index of every
#: manual page on the machine, 2-3 s of CPU each time here. Taken away while the
#: package is installed here, and put back after; `man virtpolicy` finds the
#: page without the index.
MAN_DB_AUTO_UPDATE = Path("/var/lib/man-db/auto-update")


#: hook.conf while the package is installed here (see installed()).
NO_WAIT = "HOOK_FAILURE=open\nRETRY_S=0\n"


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    """The package's own virtpolicy, as root."""
    return subprocess.run(
        ["/usr/bin/virtpolicy", *args], capture_output=True, text=True, check=False,
        timeout=60, env=UNIT_ENV,
    )  # fmt: skip


def stand_in_hook(guest: str, log: Path) -> None:
    """A hook of another manager's for ``guest``, run by the existing
    /etc/libvirt/hooks/qemu (the lab's), logging each call."""
    folder = GUEST_HOOKS / guest
    folder.mkdir(parents=True, exist_ok=True)
    script = folder / "qemu"
    script.write_text(f'#!/bin/sh\necho "$*" >> {shlex.quote(str(log))}\ncat >/dev/null\n')
    script.chmod(0o755)


def test_the_package_installs_answers_the_hook_upgrades_keeping_everything_and_goes(
    make_guest: Callable[[str], str], tmp_path: Path
) -> None:
    """Install: /usr/bin/virtpolicy from the package's own virtualenv, the unit
    systemd accepts, the settings as a conffile, the hook as a drop-in beside
    libvirt's existing hook (untouched), the man page, completion, the group and
    the user. Its daemon, started as the unit starts it, answers libvirtd's hook:
    `virsh start` of a guest whose dependency is down is refused with the reason,
    and the other hook still runs.

    Upgrade: with policies, revisions, a job and a token in the store, N+1 is
    installed over N and the daemon restarted once, as the package's maintainer
    scripts restart it: every record is still there, the daemon is the new
    version, and a hook asked again and again through the restart (with
    hook_failure closed) was never refused: the socket's absence is measured.

    `apt remove` takes the hook and the program away and keeps the store; `apt
    purge` leaves none of the package's files; the guest that ran runs on, with
    its pins. (One test: each install and purge costs the machine seconds.)"""
    db, web = make_guest("pkg-db"), make_guest("pkg-web")
    existing = Path("/etc/libvirt/hooks/qemu")
    libvirts_hook = existing.read_bytes() if existing.exists() else None
    called = tmp_path / "other-hook.log"
    stand_in_hook(web, called)
    files = {*package_files(deb()), *package_files(deb("next"))}
    with installed(tmp_path) as service:
        # What is where.
        version = subprocess.run(
            ["/usr/bin/virtpolicy", "--version"], capture_output=True, text=True, check=True
        ).stdout
        assert version.strip() == f"virtpolicy, version {deb().name.split('_')[1]}"
        assert os.path.realpath("/usr/bin/virtpolicy") == str(VENV / "bin" / "virtpolicy")
        prefix = subprocess.run(
            [str(VENV / "bin" / "python"), "-c", "import sys, virtpolicy; print(sys.prefix);"
             " print(virtpolicy.__file__)"],
            capture_output=True, text=True, check=True,
        ).stdout.split()  # fmt: skip
        assert prefix[0] == str(VENV)
        assert prefix[1].startswith(str(VENV) + "/lib/")
        verify = subprocess.run(
            ["systemd-analyze", "verify", str(UNIT)], capture_output=True, text=True, check=False
        )
        assert verify.returncode == 0, verify.stderr
        service.read_unit()
        assert service.settings["ExecStart"].startswith("/usr/bin/virtpolicy serve ")
        conffiles = subprocess.run(
            ["dpkg-query", "-W", "-f=${Conffiles}", "virtpolicy"],
            capture_output=True, text=True, check=True,
        ).stdout  # fmt: skip
        assert "/etc/virtpolicy/virtpolicy.toml" in conffiles
        assert os.path.realpath(HOOK) == "/usr/lib/virtpolicy/qemu-hook"
        assert os.access(HOOK, os.X_OK)
        assert (existing.read_bytes() if existing.exists() else None) == libvirts_hook
        assert Path("/usr/share/man/man1/virtpolicy.1.gz").exists()
        completion = Path("/usr/share/bash-completion/completions/virtpolicy").read_text()
        assert "_VIRTPOLICY_COMPLETE" in completion
        # bash asks the command itself, as the installed completion does:
        # "virtpolicy pol<TAB>" offers policy.
        offered = subprocess.run(
            ["/usr/bin/virtpolicy"], capture_output=True, text=True, check=True,
            env={**UNIT_ENV, "_VIRTPOLICY_COMPLETE": "bash_complete",
                 "COMP_WORDS": "virtpolicy pol", "COMP_CWORD": "1"},
        ).stdout.splitlines()  # fmt: skip
        assert "plain,policy" in offered  # click's answer to bash: type,word per line
        manual = subprocess.run(
            ["man", "-P", "cat", "virtpolicy"], capture_output=True, text=True, check=True,
            env={**UNIT_ENV, "MANWIDTH": "100"},
        ).stdout  # fmt: skip
        assert "virtpolicy doctor" in manual
        assert "virtpolicy policy set" in manual
        for table, name in (("group", "virtpolicy"), ("passwd", "virtpolicy-exec")):
            subprocess.run(["getent", table, name], check=True, capture_output=True)

        # The daemon, as the unit starts it; libvirtd asks it through the drop-in.
        assert cli("policy", "set", web, "--requires", db).returncode == 0
        assert cli("policy", "set", db, "--vcpupin", "0:1").returncode == 0
        # doctor names what is left to do: start the daemon (libvirtd hears the
        # drop-in already: the lab's own QEMU hook was there before it started).
        to_do = cli("doctor")
        assert to_do.returncode == 1
        assert "FIX  daemon: not running" in to_do.stdout
        service.start()
        service.ready()
        after = cli("doctor")
        assert after.returncode == 0, after.stdout
        assert "ok   hook: /etc/libvirt/hooks/qemu.d/virtpolicy (drop-in)" in after.stdout
        assert (STATE / "policies.db").exists()
        refused = try_virsh("start", web)
        assert refused.returncode != 0
        assert f"{web} requires {db} (running): {db} is shut off" in refused.stderr
        assert f"{web} prepare begin" in called.read_text()  # the other hook ran first
        virsh("start", db)
        virsh("start", web)
        eventually(lambda: "1" in virsh("vcpupin", db, "--vcpu", "0").split()[-1:], 20)

        # The upgrade, over records of every kind (db runs: its start is a job).
        assert cli("policy", "set", db, "--weight", "300").returncode == 0
        assert cli("policy", "set", db, "--weight", "400").returncode == 0
        assert cli("policy", "set", "elsewhere", "--requires", db).returncode == 0
        assert cli("token", "create", "ops", "--role", "reader").returncode == 0
        assert cli("--server", str(RUN / "virtpolicy.sock"), "start", db).returncode == 0
        records = _records(db)
        assert records["jobs"]
        assert records["tokens"]
        hook = _HookProbe(Path("/usr/lib/virtpolicy/qemu-hook"), "closed", tmp_path)
        hook.start()
        try:
            apt("install", str(deb("next")))
            # What the package's postinst asks of systemd: one restart.
            service.stop(restart=True)
            service.start()
            host = service.ready()
        finally:
            hook.stop()
        assert host["version"] == deb("next").name.split("_")[1]
        assert _records(db) == records
        assert Path("/etc/virtpolicy/hook.conf").read_text() == NO_WAIT  # kept
        assert hook.refused == [], hook.refused
        assert hook.answers > 0
        # The figures of this run, for bench/README.md (a test asserts no timing).
        print(
            f"upgrade: the hook socket was away {hook.longest_away():.2f} s; the hook answered"
            f" {hook.answers} times, the slowest in {hook.longest_wait():.2f} s"
        )
        # Enforcement carries on in the new daemon.
        assert cli("policy", "set", db, "--weight", "500").returncode == 0
        shares = "5120" if host["scheduler"] == "cgroup1" else "500"  # weight 500
        eventually(lambda: f"cpu_shares     : {shares}\n" in virsh("schedinfo", db), 20)

        # The hook's own settings (a conffile) set HOOK_FAILURE: with the daemon
        # away and closed there, the installed hook refuses a start. (Tried on a
        # copy reading a copy of the file: while the drop-in is live, libvirtd
        # runs it for the other tests' guests too, and they must not be refused.)
        service.stop()
        assert "/etc/virtpolicy/hook.conf" in conffiles
        program = HOOK.read_text()
        assert "\nSETTINGS=/etc/virtpolicy/hook.conf\n" in program
        settings = tmp_path / "hook.conf"
        settings.write_text(
            Path("/etc/virtpolicy/hook.conf").read_text().replace("=open", "=closed")
        )
        copy = tmp_path / "qemu-hook"
        copy.write_text(program.replace("/etc/virtpolicy/hook.conf", str(settings)))
        copy.chmod(0o755)
        asked = subprocess.run(
            [str(copy), "pkg-other", "prepare", "begin", "-"], input="<domain/>",
            capture_output=True, text=True, check=False, timeout=60,
        )  # fmt: skip
        assert asked.returncode == 1
        assert "hook_failure=closed refuses pkg-other" in asked.stderr

        # remove: the daemon stops (systemd's part, here the test's), the program
        # and the hook go; the store and the settings stay; the guests run on.
        apt("remove", "virtpolicy")
        assert not HOOK.exists()
        assert not HOOK.is_symlink()
        assert not Path("/usr/bin/virtpolicy").exists()
        assert (STATE / "policies.db").exists()
        assert Path("/etc/virtpolicy/virtpolicy.toml").exists()
        assert virsh("domstate", db).strip() == "running"
        started = try_virsh("start", web)  # no hook to ask now
        assert "already active" in started.stderr or started.returncode == 0

        # purge: nothing of the package is left; the guests still run, pinned.
        apt("purge", "virtpolicy")
        left = [f for f in files if not _shared(f) and (os.path.lexists(f))]
        assert left == []
        for path in (STATE, Path("/etc/virtpolicy"), RUN, VENV):
            assert not path.exists(), path
        enabled = list(Path("/etc/systemd/system").rglob("virtpolicy*"))
        assert enabled == []  # the unit's enablement went with it
        for table, name in (("group", "virtpolicy"), ("passwd", "virtpolicy-exec")):
            gone = subprocess.run(["getent", table, name], capture_output=True, check=False)
            assert gone.returncode == 2, (table, name)
        assert virsh("domstate", db).strip() == "running"
        assert virsh("vcpupin", db, "--vcpu", "0").split()[-1] == "1"
    assert (existing.read_bytes() if existing.exists() else None) == libvirts_hook


def _records(guest: str) -> dict[str, object]:
    """What the store holds, as the package's CLI shows it: every policy,
    ``guest``'s history, the jobs and the tokens."""
    return {
        "policies": json.loads(cli("policy", "list", "-o", "json").stdout),
        "history": json.loads(cli("policy", "history", guest, "-o", "json").stdout),
        "jobs": json.loads(cli("jobs", "-o", "json").stdout),
        "tokens": json.loads(cli("token", "list", "-o", "json").stdout),
    }


def _shared(path: str) -> bool:
    """A folder the package shares with the system (/etc, /usr/bin, ...), which
    purge rightly leaves."""
    return os.path.isdir(path) and any(os.scandir(path))


class _HookProbe:
    """The installed hook program asked again and again (as libvirtd would ask it
    before a start, for a guest without a policy: always allowed when the daemon
    answers), recording each refusal and how long each answer took."""

    def __init__(self, program: Path, failure: str, tmp: Path) -> None:
        text = program.read_text()
        for key, value in (("HOOK_FAILURE", failure), ("SETTINGS", "''")):  # not hook.conf's
            text, found = re.subn(rf"^{key}=\S*", f"{key}={value}", text, flags=re.M)
            assert found == 1, key
        self.program = tmp / "hook-probe"
        self.program.write_text(text)
        self.program.chmod(0o755)
        self.refused: list[str] = []
        self.took: list[float] = []
        #: When the hook socket did not take a connection (monotonic, from, to).
        self.away: list[tuple[float, float]] = []
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._run, daemon=True),
            threading.Thread(target=self._watch, daemon=True),
        ]

    @property
    def answers(self) -> int:
        return len(self.took)

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=30)

    def longest_wait(self) -> float:
        return max(self.took)

    def longest_away(self) -> float:
        return max((end - begin for begin, end in self.away), default=0.0)

    def _watch(self) -> None:
        """Connect to the hook socket every 10 ms: how long it takes none."""
        since: float | None = None
        while not self._stop.is_set():
            now = time.monotonic()
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
                try:
                    probe.connect(str(RUN / "virtpolicy-hook.sock"))
                    if since is not None:
                        self.away.append((since, now))
                    since = None
                except OSError:
                    since = now if since is None else since
            self._stop.wait(0.01)

    def _run(self) -> None:
        while not self._stop.is_set():
            began = time.monotonic()
            done = subprocess.run(
                [str(self.program), "pkg-nobody", "prepare", "begin", "-"],
                capture_output=True, text=True, check=False, timeout=60,
            )  # fmt: skip
            self.took.append(time.monotonic() - began)
            if done.returncode != 0:
                self.refused.append(done.stderr.strip())
            self._stop.wait(0.02)
