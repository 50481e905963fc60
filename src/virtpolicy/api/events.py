"""``GET /v1/events``: the daemon's event stream as Server-Sent Events."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Header, Query
from fastapi.responses import StreamingResponse

from virtpolicy.api import schemas
from virtpolicy.api.deps import DaemonDep, Reader
from virtpolicy.engine.runtime.bus import KINDS
from virtpolicy.errors import PolicyError

router = APIRouter(prefix="/v1", tags=["events"], responses=schemas.ERRORS)

KEEPALIVE_S = 15.0


@router.get("/events/recent")
async def recent(
    who: Reader,
    daemon: DaemonDep,
    kind: Annotated[list[str] | None, Query()] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> list[dict[str, Any]]:
    """The newest events the daemon still keeps (of the given ``kind``s), newest
    first, as JSON: what ``/v1/events`` would replay, for a timeline."""
    kinds = _kinds(kind)
    return [e.to_dict() for e in daemon.recent_events(kinds, limit)]


def _kinds(kind: list[str] | None) -> set[str]:
    for k in kind or ():
        if k not in KINDS:
            raise PolicyError(f'kind: "{k}" is not one of {", ".join(KINDS)}', field="kind")
    return set(kind or ())


@router.get(
    "/events",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/event-stream": {}}}},
)
async def events(
    who: Reader,
    daemon: DaemonDep,
    kind: Annotated[list[str] | None, Query()] = None,
    since: int | None = None,
    last_event_id: Annotated[str | None, Header()] = None,
) -> StreamingResponse:
    """Events as they happen (``text/event-stream``): ``lifecycle``, ``policy``,
    ``enforcement``, ``dependency``, ``job``; only the given ``kind``s if any.

    Each event's ``id:`` line is its id; reconnect with ``Last-Event-ID`` (or
    ``since=ID``) to get what was missed while the daemon still keeps it, or
    a ``gap`` event saying what is gone. A comment line every 15 s keeps
    proxies from closing an idle stream.
    """
    kinds = _kinds(kind)
    after = since
    if last_event_id is not None:
        matched = re.fullmatch(schemas.EVENT_ID_PATTERN, last_event_id)
        after = int(last_event_id.strip(" \t")) if matched else None
        if after is None:
            raise PolicyError(
                f'Last-Event-ID: "{last_event_id[:40]}" is not an event id', field="Last-Event-ID"
            )
    subscription = daemon.subscribe(after, kinds, KEEPALIVE_S)

    async def stream() -> AsyncIterator[str]:
        yield ": virtpolicy events\n\n"  # the headers go out now, not with the first event
        async for event in subscription:
            if event is None:
                yield ": keepalive\n\n"
                continue
            data = json.dumps(event.to_dict(), separators=(",", ":"))
            yield f"id: {event.id}\nevent: {event.kind}\ndata: {data}\n\n"

    return StreamingResponse(
        stream(),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )
