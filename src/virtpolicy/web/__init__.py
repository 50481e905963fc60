"""The web page: the fleet, each guest, the dependency graph, the CPU map.

Served at ``/`` on the API's listeners (the read-write and read-only sockets,
and TCP with TLS). Each page is a small server-rendered shell (Jinja2) that
holds no data: its script asks the API for everything, with the token the
user typed (kept in the tab's ``sessionStorage``) on TCP, and over a socket
with nothing (the socket says who is asking). So over TLS a page without a
token shows only the token prompt, and the read-only socket's page offers no
write (``/v1/whoami`` says what the caller may do; the API refuses anyway).

Assets ship inside the package and are served under a path that names the
version, cached for a year: nothing comes from the internet.
"""

from __future__ import annotations

import functools
import mimetypes
from importlib import resources
from typing import TYPE_CHECKING, Annotated

from fastapi import APIRouter, Path, Request
from fastapi.responses import HTMLResponse, Response

from virtpolicy import __version__
from virtpolicy.errors import NotFoundError

if TYPE_CHECKING:
    import jinja2

router = APIRouter(include_in_schema=False)

#: The pages: path -> (template, title). Each has a stable URL to link to.
PAGES = {
    "fleet": "Fleet",
    "guest": "Guest",
    "graph": "Dependency graph",
    "cpus": "CPU map",
    "activity": "Decisions and jobs",
}
_HEADERS = {
    # The shell holds no data; it may not be framed, and loads only its own assets.
    "Content-Security-Policy": (
        "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
        "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}


@functools.cache
def _templates() -> jinja2.Environment:
    # Imported at the first page asked for: a daemon nobody opens the page of
    # does not hold Jinja2 (1-2 MiB of the daemon's memory, bench/rss_floor.py).
    from jinja2 import Environment, PackageLoader, select_autoescape  # noqa: PLC0415

    return Environment(
        loader=PackageLoader("virtpolicy.web", "templates"),
        autoescape=select_autoescape(default=True),
        trim_blocks=True,
        lstrip_blocks=True,
    )


def _page(request: Request, page: str, **context: object) -> HTMLResponse:
    html = (
        _templates()
        .get_template("page.html")
        .render(
            page=page,
            title=PAGES[page],
            pages=PAGES,
            version=__version__,
            listener=request.app.state.listener,
            **context,
        )
    )
    return HTMLResponse(html, headers=_HEADERS)


@router.get("/")
async def fleet(request: Request) -> HTMLResponse:
    return _page(request, "fleet")


@router.get("/guests/{guest}")
async def guest(request: Request, guest: Annotated[str, Path(max_length=255)]) -> HTMLResponse:
    return _page(request, "guest", guest=guest)


@router.get("/graph")
async def graph(request: Request) -> HTMLResponse:
    return _page(request, "graph")


@router.get("/cpus")
async def cpus(request: Request) -> HTMLResponse:
    return _page(request, "cpus")


@router.get("/activity")
async def activity(request: Request) -> HTMLResponse:
    return _page(request, "activity")


@router.get("/static/{version}/{name}")
async def static(version: str, name: str) -> Response:
    """A packaged asset; under another version's path too (a page open across an
    upgrade), but cached for long only under this one's."""
    body = _asset(name)
    if body is None:
        raise NotFoundError(f"{name}: no such asset")
    kind = mimetypes.guess_type(name)[0] or "application/octet-stream"
    cache = "public, max-age=31536000, immutable" if version == __version__ else "no-cache"
    return Response(
        body, media_type=kind, headers={"Cache-Control": cache, "X-Content-Type-Options": "nosniff"}
    )


def _asset(name: str) -> bytes | None:
    return _assets().get(name)


@functools.cache
def _assets() -> dict[str, bytes]:
    """Every packaged asset by name, read once."""
    folder = resources.files("virtpolicy.web").joinpath("static")
    return {f.name: f.read_bytes() for f in folder.iterdir() if f.is_file()}
