"""Two hosts on one machine for the tests of migrations: the lab's two libvirtds
(tests/lab/libvirtd and tests/lab/second-libvirtd), a virtpolicy daemon on
each with its hook, one PostgreSQL store. Its fixture, ``two_hosts``, is
imported by the test modules that use it."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import (
    GUEST_XML,
    Cli,
    Daemon,
    GuestHooks,
    api_client,
    try_virsh,
    wait_connected,
)
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
    #: The guests a test defined on host-b itself (removed after it).
    defined_on_b: list[str] = field(default_factory=list)

    def on_b(self, *args: str) -> subprocess.CompletedProcess[str]:
        """virsh against the second libvirtd; the caller judges the outcome."""
        return try_virsh(*args, uri=self.uri_b)

    def define_on_b(self, name: str, vcpus: int = 1) -> None:
        """A diskless guest ``name`` defined on host-b (not started)."""
        xml = GUEST_XML.format(name=name, vcpus=vcpus, boot="network", disk="", balloon="")
        with tempfile.NamedTemporaryFile("w", suffix=".xml") as f:
            f.write(xml)
            f.flush()
            done = self.on_b("define", f.name)
        assert done.returncode == 0, done.stderr
        self.defined_on_b.append(name)

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
) -> Iterator[Callable[[], Lab]]:
    """``two_hosts()``: a daemon on each libvirtd (host-a, host-b), each publishing
    how to migrate guests to it (its libvirtd's socket as the other sees it, a
    UNIX socket for QEMU's stream), and the hook on both for the test's guests."""
    if subprocess.run([str(SECOND), "status"], check=False).returncode != 0:
        if os.environ.get("VIRTPOLICY_REQUIRE_LAB"):
            pytest.fail("the second libvirtd does not answer: tests/lab/second-libvirtd up")
        pytest.skip("no second libvirtd (tests/lab/second-libvirtd up)")
    uri_b, peer = lab2("uri"), lab2("peer-uri")
    streams = Path(tempfile.mkdtemp(prefix="vp-mig-"))
    hooked: list[str] = []
    made: list[Lab] = []

    def daemon(name: str, connect: str, published: str) -> Daemon:
        """host-NAME's daemon on ``connect``, publishing how to migrate guests to it."""
        return start_daemon(
            pg_db, "--connect", connect, "--host", f"host-{name}", "--heartbeat", "0.5",
            "--migration-uri", published, "--migration-stream", f"unix://{streams}/{name}",
        )  # fmt: skip

    def up() -> Lab:
        a, b = daemon("a", qemu_uri, peer), daemon("b", uri_b, uri_b)
        with_hook(str(a.run_dir), "closed")
        for name in guest_hooks.guests:  # host-b's hook, for the same guests
            install(str(SECOND_HOOKS / name), str(b.run_dir), "closed")
            hooked.append(name)
        wait_connected(a)
        wait_connected(b)
        made.append(Lab(a, b, qemu_uri, uri_b, Cli(pg_db)))
        return made[-1]

    yield up
    for name in hooked:
        shutil.rmtree(SECOND_HOOKS / name, ignore_errors=True)
    # Only this test's guests: another test may be migrating its own meanwhile.
    for name in [*guest_hooks.guests, *(g for lab in made for g in lab.defined_on_b)]:
        try_virsh("destroy", name, uri=uri_b)
        try_virsh("undefine", name, uri=uri_b)
    shutil.rmtree(streams, ignore_errors=True)
