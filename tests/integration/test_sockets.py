"""The daemon's real Unix sockets: modes, peer credentials, read-only refusal.

`virtpolicy serve` runs on the test driver with the project's node XML, so no
libvirtd is needed.
"""

from __future__ import annotations

import os
import pwd
import stat
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from tests.conftest import NODE, Daemon, snapshot

pytestmark = pytest.mark.integration


@pytest.fixture
def run_dir(db: str, start_daemon: Callable[..., Daemon]) -> Path:
    return start_daemon(db, "--connect", f"test://{NODE}").run_dir


def api(socket: Path) -> httpx.Client:
    return httpx.Client(
        transport=httpx.HTTPTransport(uds=str(socket)), base_url="http://virtpolicy"
    )


def test_socket_modes(run_dir: Path) -> None:
    """The read-write socket is 0660, the read-only one 0666, like libvirt's."""
    assert stat.S_IMODE(os.stat(run_dir / "virtpolicy.sock").st_mode) == 0o660
    assert stat.S_IMODE(os.stat(run_dir / "virtpolicy-ro.sock").st_mode) == 0o666


def test_write_records_the_peer_and_is_enforced(run_dir: Path, db: str) -> None:
    """A write over the socket is recorded under the peer's user and enforced."""
    with api(run_dir / "virtpolicy.sock") as rw:
        assert rw.put("/v1/policies/db", json={"cpu": {"vcpus": "3"}}).status_code == 201
        me = pwd.getpwuid(os.getuid()).pw_name
        assert rw.get("/v1/policies/db/history").json()[0]["actor"] == me
        deadline = time.monotonic() + 10
        while True:
            status = rw.get("/v1/guests/db/status")
            if status.status_code == 200 and status.json()["actual"].get("vcpupin.0") == "3":
                break
            assert time.monotonic() < deadline, status.text
            time.sleep(0.1)
        assert rw.get("/v1/host").json()["cpus"] == 4


def test_read_only_socket(run_dir: Path, db: str) -> None:
    """The read-only socket serves reads and refuses writes with 403."""
    with api(run_dir / "virtpolicy.sock") as rw:
        rw.put("/v1/policies/web", json={"cpu": {"vcpus": "1"}})
    before = snapshot(db)
    with api(run_dir / "virtpolicy-ro.sock") as ro:
        assert ro.get("/v1/policies/web").status_code == 200
        assert ro.delete("/v1/policies/web").status_code == 403
        assert ro.put("/v1/policies/web", json={}).status_code == 403
    assert snapshot(db) == before
