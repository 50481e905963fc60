"""A loopback TCP port that leads to a Unix socket, as ``ssh -L`` does.

A browser cannot open a Unix socket; a user reaches the daemon's page through
an SSH tunnel to it. The browser tests and the web page's benchmark use this
instead: the daemon then sees this process as the peer, as it would see sshd.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from pathlib import Path


class Tunnel:
    """``Tunnel(path).url`` reaches ``path``; :meth:`close` stops listening."""

    def __init__(self, path: Path | str) -> None:
        self.path = str(path)
        self._server = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self._server.getsockname()[1]}"
        threading.Thread(target=self._serve, daemon=True).start()

    def close(self) -> None:
        self._server.close()

    def _serve(self) -> None:
        while True:
            try:
                client, _ = self._server.accept()
            except OSError:
                return  # closed
            upstream = socket.socket(socket.AF_UNIX)
            try:
                upstream.connect(self.path)
            except OSError:
                client.close()
                upstream.close()
                continue
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=_pipe, args=(a, b), daemon=True).start()


def _pipe(src: socket.socket, dst: socket.socket) -> None:
    with contextlib.suppress(OSError):
        while data := src.recv(65536):
            dst.sendall(data)
    for s in (src, dst):
        with contextlib.suppress(OSError):
            s.shutdown(socket.SHUT_RDWR)
