"""Serving the API: two Unix sockets like libvirt's, and TCP only with TLS.

``virtpolicy.sock`` (0660, read-write) and ``virtpolicy-ro.sock`` (0666,
read-only) in the run directory. The server reads each Unix peer's
credentials (SO_PEERCRED) when it connects and hands them to the app in the
ASGI scope, so writes are recorded under the peer's user name.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

from virtpolicy.api.app import create_app
from virtpolicy.api.auth import PEER_KEY, Listener
from virtpolicy.api.deps import Daemon
from virtpolicy.config import check_listen
from virtpolicy.errors import ConfigError
from virtpolicy.store.base import PolicyStore

log = logging.getLogger(__name__)

RW_SOCKET = "virtpolicy.sock"
RO_SOCKET = "virtpolicy-ro.sock"
_CREDS = struct.Struct("3i")


class PeerCredProtocol(H11Protocol):
    """uvicorn's h11 protocol that puts the Unix peer's (pid, uid, gid) in the scope."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        sock = transport.get_extra_info("socket")
        if sock is None or sock.family != socket.AF_UNIX:
            return
        peer = _CREDS.unpack(sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _CREDS.size))
        app = self.app

        async def with_peer(scope: Any, receive: Any, send: Any) -> None:
            await app({**scope, PEER_KEY: peer}, receive, send)

        self.app = with_peer


class _Server(uvicorn.Server):
    """A uvicorn server that leaves signals to the daemon."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def servers(
    store: PolicyStore,
    daemon: Daemon | None,
    run_dir: str,
    listen: str | None = None,
    tls_cert: str | None = None,
    tls_key: str | None = None,
) -> list[uvicorn.Server]:
    """The servers to run: both Unix sockets, and TCP when ``listen`` is given."""
    tcp = _tcp_config(store, daemon, listen, tls_cert, tls_key) if listen else None
    directory = Path(run_dir)
    directory.mkdir(mode=0o755, parents=True, exist_ok=True)
    made = []
    for name, listener, mode in ((RW_SOCKET, "unix", 0o660), (RO_SOCKET, "unix-ro", 0o666)):
        path = directory / name
        with contextlib.suppress(FileNotFoundError):
            path.unlink()  # a stale socket from a daemon that died
        made.append(_unix_server(store, daemon, listener, path, mode))  # type: ignore[arg-type]
    if tcp is not None:
        made.append(_Server(tcp))
    return made


def _tcp_config(
    store: PolicyStore,
    daemon: Daemon | None,
    listen: str,
    tls_cert: str | None,
    tls_key: str | None,
) -> uvicorn.Config:
    check_listen(listen, tls_cert, tls_key)
    host, _, port = listen.rpartition(":")
    for key, path in (("tls_cert", tls_cert), ("tls_key", tls_key)):
        if path is None or not os.access(path, os.R_OK):
            raise ConfigError(f"{key}: cannot read {path!r}")
    return uvicorn.Config(
        create_app(store, "tcp", daemon),
        host=host.strip("[]"),
        port=int(port),
        ssl_certfile=tls_cert,
        ssl_keyfile=tls_key,
        log_config=None,
        access_log=False,
        lifespan="off",
    )


def _unix_server(
    store: PolicyStore, daemon: Daemon | None, listener: Listener, path: Path, mode: int
) -> uvicorn.Server:
    # Bind ourselves so that the mode is right before anyone can connect.
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old = os.umask(0o777 & ~mode)
    try:
        sock.bind(str(path))
    finally:
        os.umask(old)
    os.chmod(path, mode)
    config = uvicorn.Config(
        create_app(store, listener, daemon),
        fd=None,
        http=PeerCredProtocol,
        log_config=None,
        access_log=False,
        lifespan="off",
    )
    server = _Server(config)
    server.virtpolicy_socket = sock  # type: ignore[attr-defined]
    return server


async def serve(server: uvicorn.Server) -> None:
    """Run one server until it is told to exit."""
    sock = getattr(server, "virtpolicy_socket", None)
    await server.serve(sockets=[sock] if sock is not None else None)
