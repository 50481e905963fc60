"""The API over TCP: only with TLS, only with a bearer token."""

from __future__ import annotations

import signal
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import Cli

pytestmark = pytest.mark.integration

NODE = Path(__file__).parent / "nodes" / "host4.xml"
VIRTPOLICY = Path(sys.executable).parent / "virtpolicy"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def tls(tmp_path: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1."""
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
    )
    return cert, key


@pytest.fixture
def https(db: str, tmp_path: Path, tls: tuple[Path, Path]) -> Iterator[str]:
    port = free_port()
    proc = subprocess.Popen(
        [
            str(VIRTPOLICY),
            "--db",
            db,
            "serve",
            "--connect",
            f"test://{NODE}",
            "--run-dir",
            str(tmp_path / "run"),
            "--listen",
            f"127.0.0.1:{port}",
            "--tls-cert",
            str(tls[0]),
            "--tls-key",
            str(tls[1]),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    url = f"https://127.0.0.1:{port}"
    deadline = time.monotonic() + 20
    while True:
        try:
            httpx.get(
                url + "/v1/openapi.json",
                verify=ssl.create_default_context(cafile=str(tls[0])),
                timeout=1,
            )
            break
        except httpx.TransportError:
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
            assert time.monotonic() < deadline
            time.sleep(0.1)
    yield url
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=15) == 0


def test_tokens_over_tls(https: str, tls: tuple[Path, Path], run: Cli) -> None:
    """No token 401; a reader reads; an operator writes, recorded as the token."""
    reader = run("token", "create", "dash", "--role", "reader").output.strip()
    operator = run("token", "create", "ci", "--role", "operator").output.strip()
    assert reader.startswith("vpt_")
    assert operator.startswith("vpt_")
    with httpx.Client(base_url=https, verify=ssl.create_default_context(cafile=str(tls[0]))) as c:
        assert c.get("/v1/policies").status_code == 401
        assert (
            c.get("/v1/policies", headers={"Authorization": f"Bearer {reader}"}).status_code == 200
        )
        r = c.put("/v1/policies/db", json={}, headers={"Authorization": f"Bearer {reader}"})
        assert r.status_code == 403
        r = c.put(
            "/v1/policies/db",
            json={"cpu": {"vcpus": "2"}},
            headers={"Authorization": f"Bearer {operator}"},
        )
        assert r.status_code == 201
        assert (
            c.get("/v1/policies/db/history", headers={"Authorization": f"Bearer {reader}"}).json()[
                0
            ]["actor"]
            == "token:ci"
        )
    assert run("token", "delete", "ci").exit_code == 0
    with httpx.Client(base_url=https, verify=ssl.create_default_context(cafile=str(tls[0]))) as c:
        assert (
            c.get("/v1/policies", headers={"Authorization": f"Bearer {operator}"}).status_code
            == 401
        )
    listed = run("token", "list").output.split("\n")
    assert [line.split()[:2] for line in listed[1:] if line] == [["dash", "reader"]]


def test_plain_tcp_is_refused(run: Cli, tmp_path: Path) -> None:
    """--listen without a certificate and key is refused before anything listens."""
    result = run(
        "serve",
        "--connect",
        f"test://{NODE}",
        "--run-dir",
        str(tmp_path / "r"),
        "--listen",
        "127.0.0.1:8443",
    )
    assert result.exit_code == 2
    assert (
        result.output
        == "error: listen: '127.0.0.1:8443' needs tls_cert and tls_key: TCP is served only with TLS\n"
    )
    assert not (tmp_path / "r").exists()


def test_token_names_and_duplicates(run: Cli) -> None:
    """Token names are checked, and a name cannot be taken twice."""
    assert run("token", "create", "a b", "--role", "reader").exit_code == 2
    assert run("token", "create", "ci", "--role", "admin").exit_code == 0
    result = run("token", "create", "ci", "--role", "reader")
    assert (result.exit_code, result.output) == (
        3,
        'error: token "ci" exists already; delete it first\n',
    )
    assert run("token", "delete", "nope").output == 'error: no token "nope"\n'
