"""The HTTP API (``/v1``): policies with revisions, history, validation,
plans, guest status, host info, jobs, the event stream, and utilization
data (``/v1/stats``, ``/metrics``).

Errors are one JSON shape, ``{"error": {"type", "message", "field"}}``, with
the HTTP status each virtpolicy error class carries. Writes take ``If-Match:
"N"`` (the ETag of a read) and answer 412 when the policy moved on.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from virtpolicy import __version__
from virtpolicy.api import decisions, events, jobs, policies, stats, status
from virtpolicy.api.auth import Listener
from virtpolicy.api.deps import Daemon
from virtpolicy.errors import VirtpolicyError
from virtpolicy.store.base import PolicyStore

#: Largest request body accepted, as for policy files.
MAX_BODY = 8 * 1024 * 1024


def create_app(store: PolicyStore, listener: Listener, daemon: Daemon | None = None) -> FastAPI:
    """The API as served on one listener."""
    app = FastAPI(
        title="virtpolicy",
        version=__version__,
        description="Policy manager for libvirt guests.",
        openapi_url="/v1/openapi.json",
        docs_url=None,
        redoc_url=None,
    )
    app.state.store = store
    app.state.listener = listener
    app.state.daemon = daemon

    @app.middleware("http")
    async def limit_body(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        length = request.headers.get("content-length")
        if length and (not length.isdigit() or int(length) > MAX_BODY):
            return error_response(413, "PayloadTooLarge", f"body over {MAX_BODY} bytes", None)
        return await call_next(request)

    @app.exception_handler(VirtpolicyError)
    async def virtpolicy_error(_request: Request, exc: VirtpolicyError) -> JSONResponse:
        field = getattr(exc, "field", None)
        return error_response(exc.http_status, type(exc).__name__, str(exc), field)

    @app.exception_handler(RequestValidationError)
    async def request_error(_request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ()))
        return error_response(422, "RequestError", f"{where}: {first.get('msg')}", where)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return error_response(exc.status_code, "HTTPError", str(exc.detail), None)

    if listener == "hook":
        app.include_router(status.router)
        app.include_router(status.hook_router)
        return app
    app.include_router(policies.router)
    app.include_router(status.router)
    app.include_router(jobs.router)
    app.include_router(events.router)
    app.include_router(stats.router)
    app.include_router(decisions.router)
    return app


def error_response(status_code: int, kind: str, message: str, field: str | None) -> JSONResponse:
    """The one error shape of the API."""
    return JSONResponse({"error": {"type": kind, "message": message, "field": field}}, status_code)
