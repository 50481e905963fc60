"""``virtpolicy doctor``: what is off on this host, one line each, with the fix.

Each check reads and never writes: it opens libvirt read-only, the store
without migrating it, the daemon's sockets with GET requests only. A check
that does not apply here (the fleet's, on a store of one host) says so and
passes.
"""

from __future__ import annotations

import os
import stat
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import httpx

from virtpolicy import __version__
from virtpolicy.config import ServeSettings
from virtpolicy.hook.install import MARKER
from virtpolicy.store.base import HostRecord

#: Over this, another host's clock is off this one's (s).
CLOCK_SLACK_S = 1.0
SOCKETS = ("virtpolicy.sock", "virtpolicy-ro.sock", "virtpolicy-hook.sock")
DAEMONS = ("libvirtd", "virtqemud")


@dataclass(frozen=True)
class Check:
    """One line of the report: what was checked, whether all is well, what was
    found, and what to do when it is not."""

    name: str
    ok: bool
    detail: str
    fix: str = ""

    def line(self) -> str:
        mark = "ok  " if self.ok else "FIX "
        fix = f"\n      -> {self.fix}" if self.fix and not self.ok else ""
        return f"{mark} {self.name}: {self.detail}{fix}"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Where:
    """What the checks look at: the daemon's settings, and libvirt's hooks folder."""

    settings: ServeSettings
    hooks_dir: Path = Path("/etc/libvirt/hooks")
    proc: Path = Path("/proc")


def run(where: Where) -> list[Check]:
    """Every check, in the order an operator would go through them."""
    daemon = _daemon(where)
    checks: list[Check] = [_libvirt(where), *_hook(where), daemon.check]
    store, hosts = _store(where)
    checks += [store, _cgroups(where, daemon.host), *_fleet(where, hosts), _placement(daemon)]
    return checks


# -- libvirt and its hook -------------------------------------------------------------


def _libvirt(where: Where) -> Check:
    from virtpolicy.errors import HypervisorError  # noqa: PLC0415
    from virtpolicy.hypervisor.connection import versions  # noqa: PLC0415  (loads libvirt)

    uri = where.settings.connect
    try:
        found = versions(uri)
    except HypervisorError as exc:
        return Check(
            "libvirtd", False, f"does not answer: {exc}",
            "start it: systemctl start libvirtd (or virtqemud)",
        )  # fmt: skip
    return Check("libvirtd", True, f"{uri} answers: {found}")


def _hook(where: Where) -> Iterator[Check]:
    drop_in = where.hooks_dir / "qemu.d" / "virtpolicy"
    main = where.hooks_dir / "qemu"
    ours = [
        p for p in (drop_in, main) if os.access(p, os.X_OK) and MARKER in _text(p)
    ]  # fmt: skip
    if not ours:
        yield Check(
            "hook", False, f"not installed: no {drop_in}, nor virtpolicy's {main}; libvirt starts"
            " guests without asking virtpolicy",
            "virtpolicy setup (or install the package), or virtpolicy hook install",
        )  # fmt: skip
        return
    yield Check("hook", True, f"{ours[0]} ({'drop-in' if ours[0] == drop_in else 'the qemu hook'})")
    yield _hook_loaded(where, main)


def _hook_loaded(where: Where, main: Path) -> Check:
    """libvirtd looks for QEMU hooks when it starts; once it has found one, it
    runs every file in qemu.d at each call. So the hook is heard if the first
    QEMU hook here was there before the daemon started."""
    hooks = [main, *sorted((where.hooks_dir / "qemu.d").glob("*"))]
    # When each file came to be here: its inode's change time. (Not its mtime:
    # dpkg gives a packaged file the time it was built.)
    found = [p.lstat().st_ctime for p in hooks if os.access(p, os.X_OK)]
    first = min(found)
    started = _daemon_starts(where.proc)
    if not started:
        return Check(
            "hook heard", False, "no libvirtd or virtqemud runs here to hear it",
            "start it: systemctl start libvirtd",
        )  # fmt: skip
    pid, name, since = min(started, key=lambda s: s[2])  # the one that started first
    # The kernel gives the boot time in whole seconds: a start reads up to 1 s early.
    if since + 1.0 > first:
        return Check("hook heard", True, f"{name} (pid {pid}) started after the hook was there")
    return Check(
        "hook heard", False,
        f"{name} (pid {pid}) started {_ago(since)}, before the hook ({_ago(first)}): it does"
        " not ask virtpolicy yet",
        "systemctl restart libvirtd when it suits you (running guests keep running)",
    )  # fmt: skip


def _daemon_starts(proc: Path) -> list[tuple[int, str, float]]:
    """(pid, name, start as Unix time) of each libvirtd or virtqemud running here."""
    ticks = os.sysconf("SC_CLK_TCK")
    boot = next(
        float(line.split()[1])
        for line in (proc / "stat").read_text().splitlines()
        if line.startswith("btime ")
    )
    found = []
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            name = (entry / "comm").read_text().strip()
            if name not in DAEMONS:
                continue
            fields = (entry / "stat").read_text().rpartition(")")[2].split()
        except OSError:
            continue  # gone meanwhile
        found.append((int(entry.name), name, boot + int(fields[19]) / ticks))
    return found


def _ago(when: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(when))


def _text(path: Path) -> str:
    try:
        return path.read_text(errors="replace")[:4096]
    except OSError:
        return ""


# -- the daemon -------------------------------------------------------------------------


@dataclass(frozen=True)
class _Daemon:
    check: Check
    host: dict[str, Any] | None = None
    placement: dict[str, Any] | None = None


def _daemon(where: Where) -> _Daemon:
    run_dir = Path(where.settings.run_dir)
    shown, missing = [], []
    for name in SOCKETS:
        path = run_dir / name
        try:
            info = path.stat()
        except OSError:
            missing.append(name)
            continue
        shown.append(f"{name} {_owner(info)} {stat.S_IMODE(info.st_mode):04o}")
    fix = "systemctl start virtpolicy (journalctl -u virtpolicy says why it stopped)"
    if "virtpolicy-ro.sock" in missing:
        return _Daemon(Check("daemon", False, f"not running: no {run_dir}/virtpolicy-ro.sock", fix))
    try:
        with httpx.Client(
            transport=httpx.HTTPTransport(uds=str(run_dir / "virtpolicy-ro.sock")),
            base_url="http://virtpolicy", timeout=10,
        ) as client:  # fmt: skip
            host: dict[str, Any] = client.get("/v1/host").raise_for_status().json()
            placement: dict[str, Any] = client.get("/v1/placement").raise_for_status().json()
    except (httpx.HTTPError, ValueError) as exc:
        return _Daemon(Check("daemon", False, f"{run_dir}/virtpolicy-ro.sock: {exc}", fix))
    detail = f"{host.get('version', '?')} answers on {run_dir} ({', '.join(shown)})"
    if missing:
        return _Daemon(Check("daemon", False, f"{detail}; missing {', '.join(missing)}", fix))
    if host.get("version") != __version__:
        again = f"systemctl restart virtpolicy (this virtpolicy is {__version__})"
        return _Daemon(Check("daemon", False, detail, again), host, placement)
    if not host.get("connected"):
        why = f"{detail}; not connected to {host.get('uri')}"
        return _Daemon(Check("daemon", False, why, "see the libvirtd line above"), host, placement)
    return _Daemon(Check("daemon", True, detail), host, placement)


def _owner(info: os.stat_result) -> str:
    import grp  # noqa: PLC0415
    import pwd  # noqa: PLC0415

    def name(lookup: Callable[[int], Any], ident: int) -> str:
        try:
            return str(lookup(ident)[0])
        except KeyError:
            return str(ident)

    return f"{name(pwd.getpwuid, info.st_uid)}:{name(grp.getgrgid, info.st_gid)}"


# -- the store, cgroups, the fleet, placement ------------------------------------------------


def _store(where: Where) -> tuple[Check, list[HostRecord] | str | None]:
    """The store's line, and (one connection for both) the fleet's hosts on a
    shared store: the records, or why they cannot be read; None on a store of
    this host's own."""
    from virtpolicy.errors import StoreError  # noqa: PLC0415
    from virtpolicy.store import SqlStore  # noqa: PLC0415
    from virtpolicy.store.migrate import schema_state  # noqa: PLC0415
    from virtpolicy.store.sqlengine import db_errors, masked, to_url  # noqa: PLC0415

    url = to_url(where.settings.db)
    shared = url.get_backend_name() == "postgresql"
    if url.get_backend_name() == "sqlite" and not Path(url.database or "").exists():
        return Check("store", True, f"{url.database}: none yet (the daemon makes it)"), None
    fix = f"check db = ... in the settings, and that {url.get_backend_name()} runs"
    hosts: list[HostRecord] | str | None = None
    try:
        store = SqlStore(where.settings.db, migrate=False)
        try:
            with db_errors(url):
                ok, detail = schema_state(store.engine, url)
            if shared:
                try:
                    hosts = store.hosts()
                except StoreError as exc:
                    hosts = f"cannot read the hosts: {exc}"
        finally:
            store.close()
    except StoreError as exc:
        unread = f"cannot read the hosts: {exc}" if shared else None
        return Check("store", False, f"not reachable: {exc}", fix), unread
    return Check("store", ok, f"{masked(url)}: {detail}", "" if ok else "see above"), hosts


def _cgroups(where: Where, host: dict[str, Any] | None) -> Check:
    version = "v2" if Path("/sys/fs/cgroup/cgroup.controllers").exists() else "v1"
    if host is None or "scheduler" not in host:
        return Check("cgroups", True, f"{version} (the daemon does not answer: no driver to ask)")
    return Check("cgroups", True, f"{version}; libvirt's scheduler: {host['scheduler']}")


def _fleet(where: Where, records: list[HostRecord] | str | None) -> Iterator[Check]:
    if records is None:
        yield Check("fleet", True, "a store of this host's own: no fleet to check")
        return
    if isinstance(records, str):
        yield Check("fleet", False, records, "see the store line above")
        return
    now, me = time.time(), where.settings.host
    mine = next((h for h in records if h.name == me), None)
    if mine is None:
        yield Check("fleet", False, f"{me} is not in the fleet", "start the daemon on this host")
        return
    age = now - mine.heartbeat_at
    yield Check(
        "heartbeat", mine.shown_state(now) == "up",
        f"{me} beat {age:.1f} s ago (every {mine.heartbeat_s:g} s)",
        "the daemon is not beating: systemctl status virtpolicy",
    )  # fmt: skip
    for other in (h for h in records if h.name != me):
        state = other.shown_state(now)
        if state == "left":
            yield Check(f"host {other.name}", True, "left the fleet (a clean stop)")
            continue
        off = other.clock_offset_s - mine.clock_offset_s
        if state == "lost":
            yield Check(
                f"host {other.name}", False, f"lost: silent for {now - other.heartbeat_at:.0f} s",
                f"see to virtpolicy on {other.name}",
            )  # fmt: skip
        elif abs(off) > CLOCK_SLACK_S:
            side = "ahead of" if off > 0 else "behind"
            yield Check(
                f"host {other.name}", False, f"its clock is {abs(off):.1f} s {side} this host's",
                "keep both clocks in time (chrony or systemd-timesyncd)",
            )  # fmt: skip
        else:
            yield Check(f"host {other.name}", True, f"up, clock within {CLOCK_SLACK_S:g} s")


def _placement(daemon: _Daemon) -> Check:
    view = daemon.placement
    if view is None:
        return Check("placement", True, "the daemon does not answer: nothing to ask")
    if not view.get("in_play"):
        return Check("placement", True, "not in play (no dedicated CPUs, NUMA nodes or reserve)")
    refused: dict[str, Any] = view.get("refused") or {}
    if not refused:
        return Check("placement", True, f"in play: {len(view.get('guests') or {})} guests placed")
    first, why = next(iter(sorted(refused.items())))
    reason = why.get("reason", why) if isinstance(why, dict) else why
    more = f" (and {len(refused) - 1} more)" if len(refused) > 1 else ""
    return Check(
        "placement", False, f"{first} refused: {reason}{more}",
        "virtpolicy plan placement shows every guest; free CPUs or change the policy",
    )  # fmt: skip
