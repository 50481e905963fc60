"""What every request passes before any route sees it (ASGI middleware).

- :class:`BodyLimit`: a body over the limit is refused (413) before it is read.
- :class:`SameOrigin`: a request that changes state (any method but GET, HEAD
  and OPTIONS) is refused (403) when a browser says it comes from a page of
  another origin (``Origin``, ``Sec-Fetch-Site``); and every route that reads
  a body refuses (415) one that is not JSON, or YAML where it reads YAML
  (:func:`bad_type`). A browser sends a "simple" cross-site request (a form,
  ``text/plain``, ``fetch(..., {mode: "no-cors"})``) without asking first;
  with both checks, no page but the daemon's own can change anything through
  an operator's tunnel to the read-write socket.
- Text in the path and the query that is not UTF-8 is refused (400) here too,
  so that no route meets a string it cannot store or print.
"""

from __future__ import annotations

from collections.abc import Iterable
from urllib.parse import unquote_to_bytes

from fastapi.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from virtpolicy.errors import BodyTooLargeError
from virtpolicy.policy.numbers import ascii_int
from virtpolicy.policy.text import printable

#: Methods that read; every other one changes something.
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
JSON = "application/json"
MERGE_PATCH = "application/merge-patch+json"
YAML_TYPES = frozenset({"application/yaml", "application/x-yaml", "text/yaml"})


def error_response(status_code: int, kind: str, message: str, field: str | None) -> JSONResponse:
    """The one error shape of the API."""
    return JSONResponse({"error": {"type": kind, "message": message, "field": field}}, status_code)


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key == name:
            return str(value.decode("latin-1"))
    return None


class BodyLimit:
    """Refuses a request body over ``limit`` bytes: at once when Content-Length says
    so, and while reading it otherwise (chunked), so that no body is read whole."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length_text = _header(scope, b"content-length")
        if length_text is not None:
            length = ascii_int(length_text)
            if length is None or length > self.limit:
                error = BodyTooLargeError(self._message())
                response = error_response(413, type(error).__name__, str(error), "body")
                await response(scope, receive, send)
                return
        seen = 0

        async def limited() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    raise BodyTooLargeError(self._message())
            return message

        await self.app(scope, limited, send)

    def _message(self) -> str:
        return f"body: over the limit of {self.limit} bytes"


class SameOrigin:
    """Refuses cross-origin and non-JSON requests that change state (see the module)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        refusal = bad_text(scope) or (
            None if scope["method"] in SAFE_METHODS else cross_origin(scope)
        )
        if refusal is not None:
            status, kind, message, field = refusal
            await error_response(status, kind, message, field)(scope, receive, send)
            return
        await self.app(scope, receive, send)


Refusal = tuple[int, str, str, str]


def cross_origin(scope: Scope) -> Refusal | None:
    """403 when the browser says the request comes from another origin."""
    site = _header(scope, b"sec-fetch-site")
    if site is not None and site not in ("same-origin", "none"):
        return (
            403,
            "ForbiddenError",
            f"Sec-Fetch-Site: {printable(site[:40])}: a page of another site may not change "
            "anything here",
            "Sec-Fetch-Site",
        )
    origin = _header(scope, b"origin")
    if origin is None:
        return None  # not a browser's cross-origin request: those always carry Origin
    host = _header(scope, b"host")
    own = f"{scope.get('scheme', 'http')}://{host}" if host else None
    if origin != own:
        return (
            403,
            "ForbiddenError",
            f"Origin: {printable(origin[:80])} is not this server's own origin "
            f"({printable(own[:80]) if own else 'no Host header'}): a page of another origin "
            "may not change anything here",
            "Origin",
        )
    return None


def bad_type(content_type: str | None, *, yaml: bool = False) -> Refusal | None:
    """415 unless the body is JSON (or YAML, where the route reads it): the
    routes that read a body ask this before they read it."""
    media = (content_type or "").split(";", 1)[0].strip().lower()
    accepted: Iterable[str] = (JSON, MERGE_PATCH, *(sorted(YAML_TYPES) if yaml else ()))
    if media in accepted:
        return None
    shown = printable(content_type[:60]) if content_type else "(none)"
    return (
        415,
        "UnsupportedMediaTypeError",
        f"Content-Type: {shown} is not accepted here: send {' or '.join(accepted)}",
        "Content-Type",
    )


def bad_text(scope: Scope) -> Refusal | None:
    """400 when the path or the query, once decoded, is not UTF-8 text."""
    for where, raw in (("path", scope.get("raw_path") or b""), ("query", scope["query_string"])):
        try:
            unquote_to_bytes(raw.replace(b"+", b" ")).decode("utf-8")
        except UnicodeDecodeError as exc:
            return (
                400,
                "RequestError",
                f"{where}: not UTF-8 text (byte 0x{exc.object[exc.start]:02x} at {exc.start})",
                where,
            )
    return None
