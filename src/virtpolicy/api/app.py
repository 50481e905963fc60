"""The HTTP API (``/v1``): policies with revisions, history, validation,
plans, guest status, host info, jobs, the event stream, and utilization
data (``/v1/stats``, ``/metrics``).

Errors are one JSON shape, ``{"error": {"type", "message", "field"}}``, with
the HTTP status each virtpolicy error class carries. Writes take ``If-Match:
"N"`` (the ETag of a read) and answer 412 when the policy moved on.
"""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match
from starlette.types import Scope

from virtpolicy import __version__, web
from virtpolicy.api import decisions, events, jobs, policies, schemas, stats, status, views
from virtpolicy.api.auth import Listener
from virtpolicy.api.deps import Daemon, Reader
from virtpolicy.api.guard import BodyLimit, SameOrigin, error_response
from virtpolicy.engine.fleetview import FleetReads
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
        openapi_url=None,  # served below, to callers the listener lets in
        docs_url=None,
        redoc_url=None,
    )
    app.state.store = store
    app.state.fleet = FleetReads(store)
    app.state.listener = listener
    app.state.daemon = daemon

    # The last added runs first: a cross-origin request is refused before its body.
    app.add_middleware(BodyLimit, limit=MAX_BODY)
    app.add_middleware(SameOrigin)

    @app.exception_handler(VirtpolicyError)
    async def virtpolicy_error(_request: Request, exc: VirtpolicyError) -> JSONResponse:
        field = getattr(exc, "field", None)
        response = error_response(exc.http_status, type(exc).__name__, str(exc), field)
        retry = getattr(exc, "retry_after", None)
        if retry is not None:  # the store is busy or down: a client may try again then
            response.headers["Retry-After"] = str(retry)
        return response

    @app.exception_handler(RequestValidationError)
    async def request_error(_request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ()))
        return error_response(422, "RequestError", f"{where}: {first.get('msg')}", where)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        response = error_response(exc.status_code, "HTTPError", str(exc.detail), None)
        response.headers.update(exc.headers or {})
        if exc.status_code == 405:  # every method of the path, not of the first route
            response.headers["Allow"] = ", ".join(allowed_methods(app, request.scope))
        return response

    @app.get("/v1/openapi.json", include_in_schema=False)
    async def openapi(who: Reader) -> JSONResponse:
        """The OpenAPI document; over TCP, like everything else, only with a token."""
        return JSONResponse(app.openapi())

    schemas.install(app)

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
    app.include_router(views.router)
    app.include_router(web.router)
    return app


#: The methods a route here may answer to.
METHODS = ("DELETE", "GET", "HEAD", "PATCH", "POST", "PUT")


def allowed_methods(app: FastAPI, scope: Scope) -> list[str]:
    """The methods some route of ``app`` answers at the request's path (Starlette's
    405 names those of the first route that matched the path alone)."""
    return [
        method
        for method in METHODS
        if any(route.matches({**scope, "method": method})[0] == Match.FULL for route in app.routes)
    ]
