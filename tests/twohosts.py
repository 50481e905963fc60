"""Two hosts on one machine for the tests of migrations: the lab's two libvirtds
(tests/lab/libvirtd and tests/lab/second-libvirtd), a virtpolicy daemon on
each with its hook, one PostgreSQL store. Its fixture, ``two_hosts``, is
imported by the test modules that use it."""

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

from tests.conftest import Cli, Daemon, GuestHooks, api_client, wait_connected
from virtpolicy.hook.install import install

SECOND = Path(__file__).parent / "lab" / "second-libvirtd"
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


@pytest.fixture(name="two_hosts")
def two_hosts_fixture(
    pg_db: str,
    start_daemon: Callable[..., Daemon],
    qemu_uri: str,
    guest_hooks: GuestHooks,
    with_hook: Callable[..., None],
    short_dir: Callable[[], Path],
) -> Iterator[Callable[..., Lab]]:
    """``two_hosts(*b_args)``: a daemon on each libvirtd (host-a, host-b), each publishing
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
