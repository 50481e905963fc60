"""The daemon's listeners as a hostile local user finds them: body limits, slow and
idle clients, the connection cap, and the hook's own socket.

`virtpolicy serve` runs on the test driver with the project's node XML.
"""

from __future__ import annotations

import os
import socket
import stat
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.conftest import NODE, Daemon, api_client, eventually, snapshot
from virtpolicy.api.server import MAX_CONNECTIONS

pytestmark = pytest.mark.integration


@pytest.fixture
def daemon(db: str, start_daemon: Callable[..., Daemon]) -> Daemon:
    # A request not all in within 2 s is cut off (10 by default): the slow
    # clients' tests wait for that.
    return start_daemon(db, "--connect", f"test://{NODE}", "--request-timeout", "2")


def raw(path: Path) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(30)
    sock.connect(str(path))
    return sock


def read_all(sock: socket.socket) -> bytes:
    chunks = []
    while chunk := sock.recv(65536):
        chunks.append(chunk)
    return b"".join(chunks)


def test_chunked_body_over_the_limit_is_refused_while_read(daemon: Daemon, db: str) -> None:
    """A chunked body (no Content-Length) of 12 MiB to /v1/validate on the read-only socket
    gets 413 once it passes 8 MiB, instead of being read whole."""
    before = snapshot(db)
    sock = raw(daemon.run_dir / "virtpolicy-ro.sock")
    sock.sendall(
        b"POST /v1/validate HTTP/1.1\r\nHost: vp\r\nContent-Type: application/json\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n"
    )
    chunk = b"[" + b" " * (1024 * 1024 - 1)
    try:
        for _ in range(12):
            sock.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
        sock.sendall(b"0\r\n\r\n")
    except (BrokenPipeError, ConnectionResetError):
        pass  # the daemon answered and closed before the rest
    answer = read_all(sock)
    sock.close()
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    assert b"body: over the limit of 8388608 bytes" in answer
    assert snapshot(db) == before


def test_slow_client_is_cut_off(daemon: Daemon) -> None:
    """A client that sends part of its headers and then nothing (slowloris) is
    disconnected after the request timeout, and so is one that sends nothing."""
    partial = raw(daemon.run_dir / "virtpolicy-ro.sock")
    partial.sendall(b"GET /v1/status HTTP/1.1\r\nHost: vp\r\n")
    silent = raw(daemon.run_dir / "virtpolicy-ro.sock")
    assert read_all(partial) == b""  # closed by the daemon, with no answer
    assert read_all(silent) == b""
    partial.close()
    silent.close()


@pytest.fixture
def idle(daemon: Daemon) -> Iterator[list[socket.socket]]:
    """As many idle connections to the read-only socket as it takes."""
    held = [raw(daemon.run_dir / "virtpolicy-ro.sock") for _ in range(MAX_CONNECTIONS["unix-ro"])]
    yield held
    for sock in held:
        sock.close()


def test_connection_cap_refuses_cleanly_and_spares_the_hook(
    daemon: Daemon, idle: list[socket.socket]
) -> None:
    """With the read-only socket full of idle connections, one more gets a 503 and is
    closed, while the hook's socket and the read-write socket still answer."""
    extra = raw(daemon.run_dir / "virtpolicy-ro.sock")
    answer = read_all(extra)
    extra.close()
    assert answer.startswith(b"HTTP/1.1 503"), answer[:100]
    assert b"too many connections" in answer
    with api_client(daemon.run_dir / "virtpolicy-hook.sock") as hook:
        r = hook.get("/v1/guests/nothing/admission")
        assert (r.status_code, r.json()["allowed"]) == (200, True)
    with api_client(daemon.socket) as rw:
        assert rw.get("/v1/status").status_code == 200
    assert len(idle) == MAX_CONNECTIONS["unix-ro"]


def test_descriptor_limit_is_raised(daemon: Daemon) -> None:
    """The daemon raises its soft limit of open files to the hard limit at start."""
    limits = Path(f"/proc/{daemon.proc.pid}/limits").read_text()
    line = next(line for line in limits.splitlines() if line.startswith("Max open files"))
    soft, hard = line.split()[3:5]
    assert soft == hard


def test_hook_socket_is_root_only_and_takes_the_reports(daemon: Daemon) -> None:
    """The hook's socket is 0600; hook reports are taken there and nowhere else, so no
    operator or reader can claim a guest is running."""
    hook_path = daemon.run_dir / "virtpolicy-hook.sock"
    assert stat.S_IMODE(os.stat(hook_path).st_mode) == 0o600
    for name in ("virtpolicy.sock", "virtpolicy-ro.sock"):
        with api_client(daemon.run_dir / name) as c:
            assert c.post("/v1/hook/web/started/begin").status_code == 404
    with api_client(hook_path) as hook:
        assert hook.post("/v1/hook/web/started/begin").status_code == 204
        # The hook's socket serves only what the hook needs.
        assert hook.get("/v1/policies").status_code == 404


def test_status_answers_while_a_reader_floods(daemon: Daemon) -> None:
    """Status answers on the read-write socket while the read-only one is at its cap."""
    held = [raw(daemon.run_dir / "virtpolicy-ro.sock") for _ in range(MAX_CONNECTIONS["unix-ro"])]
    try:
        with api_client(daemon.socket) as rw:
            assert eventually(lambda: rw.get("/v1/host").json()["connected"])
    finally:
        for sock in held:
            sock.close()
