"""The API over TCP: only with TLS, only with a bearer token."""

from __future__ import annotations

import json
import ssl
from pathlib import Path

import httpx
import pytest

from tests.conftest import NODE, Cli

pytestmark = pytest.mark.integration


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
    [shown] = json.loads(run("token", "list", "-o", "json").output)
    assert (shown["name"], shown["role"]) == ("dash", "reader")
    assert "secret" not in json.dumps(shown)
    assert "digest" not in shown


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


def test_cli_over_tls_with_a_token(
    https: str, tls: tuple[Path, Path], db: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`virtpolicy --server https://... --token T` works as through the socket, verifying
    the daemon's certificate against SSL_CERT_FILE."""
    run = Cli(db)
    token = run("token", "create", "ops", "--role", "operator").output.strip()
    monkeypatch.setenv("SSL_CERT_FILE", str(tls[0]))
    server = ["--server", https, "--token", token]
    assert run(*server, "policy", "set", "web", "--weight", "300").exit_code == 0
    got = run(*server, "policy", "get", "web")
    assert got.exit_code == 0, got.output
    assert "weight: 300" in got.stdout
    history = run(*server, "policy", "history", "web", "-o", "json")
    assert '"actor": "token:ops"' in history.stdout
