"""Serving the API: two Unix sockets like libvirt's, and TCP only with TLS.

``virtpolicy.sock`` (0660, read-write), ``virtpolicy-ro.sock`` (0666,
read-only) and ``virtpolicy-hook.sock`` (0600: root, for libvirt's hook) in
the run directory. The server reads each Unix peer's
credentials (SO_PEERCRED) when it connects and hands them to the app in the
ASGI scope, so writes are recorded under the peer's user name.
"""

from __future__ import annotations

import asyncio
import contextlib
import grp
import logging
import os
import resource
import socket
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import h11
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
#: Only the hook's question and reports, for root only: nothing done on the
#: other sockets can starve it.
HOOK_SOCKET = "virtpolicy-hook.sock"

#: Connections each listener keeps at most; their sum stays far below the
#: descriptor limit, so that the accept loop never runs out.
MAX_CONNECTIONS: dict[Listener, int] = {"unix": 128, "unix-ro": 128, "hook": 64, "tcp": 128}
REQUEST_TIMEOUT_S = 10.0
_BACKLOG = 256
IDLE_TIMEOUT_S = 5
_CREDS = struct.Struct("3i")


class GuardedProtocol(H11Protocol):
    """uvicorn's h11 protocol with limits, and the Unix peer's credentials.

    - At most :attr:`max_connections` connections on the listener: one more
      gets a 503 and is closed at once, so that idle clients cannot use up the
      daemon's descriptors.
    - A request (headers and body) must arrive within :attr:`request_timeout`
      seconds of the connection or of the previous response, else the
      connection is closed: no slowloris. Idle keep-alive connections close
      after uvicorn's ``timeout_keep_alive``.
    - On a Unix socket, the peer's (pid, uid, gid) goes into the ASGI scope.
    """

    max_connections = 128
    request_timeout = 10.0
    _deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        if len(self.connections) >= self.max_connections:
            transport.write(_BUSY)
            transport.close()
            return
        super().connection_made(transport)
        self._arm()
        sock = transport.get_extra_info("socket")
        if sock is None or sock.family != socket.AF_UNIX:
            return
        peer = _CREDS.unpack(sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _CREDS.size))
        app = self.app

        async def with_peer(scope: Any, receive: Any, send: Any) -> None:
            await app({**scope, PEER_KEY: peer}, receive, send)

        self.app = with_peer

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        if hasattr(self, "transport"):  # not for a connection refused above
            super().connection_lost(exc)

    def handle_events(self) -> None:
        super().handle_events()
        if self.conn.their_state in (h11.DONE, h11.MUST_CLOSE, h11.CLOSED):
            self._disarm()  # the whole request is in

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing():
            self._arm()  # the next request has the same time

    def _arm(self) -> None:
        self._disarm()
        self._deadline = self.loop.call_later(self.request_timeout, self._too_slow)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _too_slow(self) -> None:
        self._deadline = None
        if not self.transport.is_closing():
            self.transport.close()


_BUSY = (
    b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n"
    b"connection: close\r\ncontent-length: 98\r\n\r\n"
    b'{"error": {"type": "BusyError", "message": "too many connections to this socket", '
    b'"field": null}}\n'
)


def protocol(max_connections: int, request_timeout: float) -> type[GuardedProtocol]:
    """The protocol class for one listener, with its limits."""
    return type(
        "ListenerProtocol",
        (GuardedProtocol,),
        {"max_connections": max_connections, "request_timeout": request_timeout},
    )


class _Server(uvicorn.Server):
    """A uvicorn server that leaves signals to the daemon, and sleeps while idle:
    uvicorn's own main loop wakes ten times a second to look at ``should_exit``
    (most of an idle daemon's CPU with four listeners); this one waits for it."""

    _exit: asyncio.Event | None = None

    @property
    def should_exit(self) -> bool:
        return self._exit is not None and self._exit.is_set()

    @should_exit.setter
    def should_exit(self, value: bool) -> None:
        if self._exit is None:
            self._exit = asyncio.Event()
        if value:
            self._exit.set()

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield

    async def main_loop(self) -> None:
        await self.on_tick(0)  # the default headers, once (no Date header: see below)
        assert self._exit is not None
        await self._exit.wait()


def servers(
    store: PolicyStore,
    daemon: Daemon | None,
    run_dir: str,
    listen: str | None = None,
    tls_cert: str | None = None,
    tls_key: str | None = None,
    *,
    request_timeout: float = REQUEST_TIMEOUT_S,
    socket_group: str | None = None,
) -> list[uvicorn.Server]:
    """The servers to run: the Unix sockets, and TCP when ``listen`` is given;
    the read-write socket's group is ``socket_group`` when given (its members
    may use it).

    The read-write socket is bound last: once it exists, every socket does.
    """
    gid = _gid(socket_group) if socket_group is not None else -1
    tcp = _tcp_config(store, daemon, listen, tls_cert, tls_key, request_timeout) if listen else None
    directory = Path(run_dir)
    directory.mkdir(mode=0o755, parents=True, exist_ok=True)
    sockets: list[tuple[str, Listener, int]] = [(RO_SOCKET, "unix-ro", 0o666)]
    if daemon is not None:
        sockets.append((HOOK_SOCKET, "hook", 0o600))
    sockets.append((RW_SOCKET, "unix", 0o660))
    made = []
    for name, listener, mode in sockets:
        group = gid if listener == "unix" else -1
        made.append(
            _unix_server(store, daemon, listener, directory / name, mode, request_timeout, group)
        )
    if tcp is not None:
        made.append(_Server(tcp))
    return made


def raise_descriptor_limit() -> int:
    """Raise the soft limit of open files to the hard one; the new soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = hard if hard != resource.RLIM_INFINITY else max(soft, 65536)
    if want > soft:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
            return want
    return soft


def _gid(group: str) -> int:
    try:
        return grp.getgrnam(group).gr_gid
    except KeyError:
        raise ConfigError(f"socket_group: there is no group named {group!r}") from None


def _tcp_config(
    store: PolicyStore,
    daemon: Daemon | None,
    listen: str,
    tls_cert: str | None,
    tls_key: str | None,
    request_timeout: float,
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
        http=protocol(MAX_CONNECTIONS["tcp"], request_timeout),
        timeout_keep_alive=IDLE_TIMEOUT_S,
        date_header=False,  # it would need a tick every second
        log_config=None,
        access_log=False,
        lifespan="off",
    )


def _unix_server(
    store: PolicyStore,
    daemon: Daemon | None,
    listener: Listener,
    path: Path,
    mode: int,
    request_timeout: float,
    gid: int = -1,
) -> uvicorn.Server:
    app = create_app(store, listener, daemon)
    # Bind ourselves, under a name of our own, so that the mode is right and
    # the socket listens before its path appears: a client that connects as
    # soon as it sees the path waits in the backlog, and is never refused.
    ready = path.with_name(f".{path.name}.{os.getpid()}")
    with contextlib.suppress(FileNotFoundError):
        ready.unlink()  # left by a daemon of the same pid that died
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old = os.umask(0o777 & ~mode)
    try:
        sock.bind(str(ready))
    finally:
        os.umask(old)
    os.chmod(ready, mode)
    if gid != -1:
        os.chown(ready, -1, gid)
    sock.listen(_BACKLOG)
    os.replace(ready, path)  # over a stale socket from a daemon that died
    config = uvicorn.Config(
        app,
        fd=None,
        http=protocol(MAX_CONNECTIONS[listener], request_timeout),
        timeout_keep_alive=IDLE_TIMEOUT_S,
        backlog=_BACKLOG,
        date_header=False,  # it would need a tick every second
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
