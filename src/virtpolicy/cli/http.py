"""A small HTTP/1.1 client on the standard library, for the commands.

The CLI talks to one daemon over a Unix socket or https; the standard
library's ``http.client`` does that in a few milliseconds of import, where
httpx takes a tenth of a second, which a command run in a loop pays every
time. HTTPS verifies against the system's CAs (``SSL_CERT_FILE`` and
``SSL_CERT_DIR`` are honoured).
"""

from __future__ import annotations

import http.client
import json
import socket
import ssl
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import urlencode, urlsplit

Params = Mapping[str, Any] | Sequence[tuple[str, Any]]


class TransportError(OSError):
    """The daemon could not be reached, or broke the connection."""


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("virtpolicy", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self._path)
        except OSError:
            sock.close()
            raise
        self.sock = sock


class Client:
    """Requests to one server: ``/path/to/socket`` or ``https://host:port``."""

    def __init__(self, server: str, headers: Mapping[str, str], timeout: float) -> None:
        self.server = server
        self.headers = dict(headers)
        self.timeout = timeout
        self._conn: http.client.HTTPConnection | None = None

    def request(
        self,
        method: str,
        path: str,
        *,
        params: Params | None = None,
        json_body: Any = None,
        content: bytes | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> tuple[int, bytes]:
        """One request; (status, body). TransportError if the server cannot be reached."""
        if params:
            path += "?" + urlencode(list(params.items()) if isinstance(params, Mapping) else params)
        sent = {**self.headers, **(headers or {})}
        if json_body is not None:
            content = json.dumps(json_body).encode()
            sent.setdefault("content-type", "application/json")
        for attempt in (1, 2):  # a kept-alive connection the server closed: once more
            conn = self._connection()
            try:
                conn.request(method, path, body=content, headers=sent)
                response = conn.getresponse()
                return response.status, response.read()
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError) as exc:
                self.close()
                if attempt == 2:
                    raise TransportError(str(exc)) from exc
            except (OSError, http.client.HTTPException) as exc:
                self.close()
                raise TransportError(str(exc) or type(exc).__name__) from exc
        raise AssertionError("unreachable")

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _connection(self) -> http.client.HTTPConnection:
        if self._conn is None:
            if self.server.startswith(("https://", "http://")):
                url = urlsplit(self.server)
                if url.scheme == "https":
                    context = ssl.create_default_context()
                    self._conn = http.client.HTTPSConnection(
                        url.hostname or "", url.port, timeout=self.timeout, context=context
                    )
                else:
                    self._conn = http.client.HTTPConnection(
                        url.hostname or "", url.port, timeout=self.timeout
                    )
            else:
                self._conn = _UnixConnection(self.server, self.timeout)
        return self._conn
