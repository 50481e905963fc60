"""A small HTTP/1.1 client, for the commands: one request per connection.

The CLI talks to one daemon over a Unix socket or https. httpx takes a tenth
of a second to import and even ``http.client`` some 40 ms (it parses headers
with the email package), which a command run in a loop pays every time; a
request and its answer are a few lines over a socket. HTTPS verifies against
the system's CAs (``SSL_CERT_FILE`` and ``SSL_CERT_DIR`` are honoured).
"""

from __future__ import annotations

import json
import socket
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import quote, urlsplit

Params = Mapping[str, Any] | Sequence[tuple[str, Any]]
_MAX_ANSWER = 64 * 1024 * 1024


class Client:
    """Requests to one server: ``/path/to/socket`` or ``https://host:port``."""

    def __init__(self, server: str, headers: Mapping[str, str], timeout: float) -> None:
        self.server = server
        self.headers = dict(headers)
        self.timeout = timeout

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
        """One request; (status, body). OSError if the server cannot be reached or
        breaks the connection."""
        if params:
            pairs = list(params.items()) if isinstance(params, Mapping) else list(params)
            path += "?" + "&".join(f"{quote(str(k))}={quote(str(v), safe='')}" for k, v in pairs)
        sent = {"host": "virtpolicy", **self.headers, **(headers or {}), "connection": "close"}
        if json_body is not None:
            content = json.dumps(json_body).encode()
            sent.setdefault("content-type", "application/json")
        body = content or b""
        if body or method in ("POST", "PUT", "PATCH"):
            sent["content-length"] = str(len(body))
        head = f"{method} {path} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in sent.items())
        with self._connect() as sock:
            sock.sendall(head.encode("latin-1") + b"\r\n" + body)
            return _answer(sock)

    def _connect(self) -> socket.socket:
        if not self.server.startswith(("https://", "http://")):
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.settimeout(self.timeout)
            try:
                sock.connect(self.server)
            except OSError:
                sock.close()
                raise
            return sock
        url = urlsplit(self.server)
        host = url.hostname or ""
        plain = socket.create_connection(
            (host, url.port or (443 if url.scheme == "https" else 80)), self.timeout
        )
        if url.scheme != "https":
            return plain
        import ssl  # noqa: PLC0415  (not for the Unix socket, the common case)

        return ssl.create_default_context().wrap_socket(plain, server_hostname=host)


def _answer(sock: socket.socket) -> tuple[int, bytes]:
    """Read a whole HTTP/1.1 answer (the server closes after it)."""
    data = bytearray()
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("the daemon closed the connection without answering")
        data += chunk
    head, _, rest = bytes(data).partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    try:
        status = int(lines[0].split(" ", 2)[1])
    except (IndexError, ValueError):
        raise ConnectionError(f"not an HTTP answer: {lines[0][:80]!r}") from None
    fields = {k.strip().lower(): v.strip() for k, _, v in (h.partition(":") for h in lines[1:])}
    body = bytearray(rest)
    length = fields.get("content-length")
    while (length is None or len(body) < int(length)) and len(body) <= _MAX_ANSWER:
        chunk = sock.recv(65536)
        if not chunk:
            break
        body += chunk
    if fields.get("transfer-encoding", "").lower() == "chunked":
        return status, _dechunk(bytes(body))
    return status, bytes(body[: int(length)] if length is not None else body)


def _dechunk(data: bytes) -> bytes:
    out = bytearray()
    while data:
        size_line, _, data = data.partition(b"\r\n")
        size = int(size_line.split(b";")[0] or b"0", 16)
        if size == 0:
            break
        out += data[:size]
        data = data[size + 2 :]
    return bytes(out)
