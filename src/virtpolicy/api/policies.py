"""Routes for policies: CRUD with revisions (ETag/If-Match), history,
validation and plans."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Callable
from typing import Annotated, Any

from fastapi import APIRouter, Header, Query, Request, Response
from fastapi.responses import PlainTextResponse

from virtpolicy.api import schemas
from virtpolicy.api.deps import (
    GuestPath,
    Reader,
    Store,
    Writer,
    guest_name,
    json_object,
    notify_daemon,
    read_body,
    selector,
)
from virtpolicy.engine import changes, planning
from virtpolicy.engine.changes import outcome_result
from virtpolicy.errors import ConflictError, NotFoundError, PolicyError, PreconditionFailedError
from virtpolicy.policy.document import check_unique, dump_yaml, parse_documents
from virtpolicy.policy.model import GuestPolicy, parse_policy
from virtpolicy.policy.text import quoted
from virtpolicy.store.base import Outcome, Put, StoredPolicy

router = APIRouter(prefix="/v1", tags=["policies"], responses=schemas.ERRORS)

IfMatch = Annotated[str | None, Header()]
Labels = Annotated[list[str] | None, Query()]
Guests = Annotated[list[str] | None, Query()]


@router.get("/policies")
def list_policies(who: Reader, store: Store, label: Labels = None) -> list[dict[str, Any]]:
    """Every policy, optionally only those with all labels ``KEY=VALUE``. Without
    labels, a stored policy that no longer loads is listed too, with ``"policy":
    null`` and ``"broken"`` saying why: replace it whole or delete it."""
    chosen = dict(selector(spec) for spec in label or ())
    stored, unloadable = store.policies_and_broken(chosen)
    listed = [_stored(s) for s in stored]
    if chosen:
        return listed
    broken = [
        {
            "guest": b.guest,
            "revision": b.revision,
            "updated_at": b.updated_at,
            "updated_by": b.updated_by,
            "policy": None,
            "broken": b.reason,
        }
        for b in unloadable
    ]
    return sorted(listed + broken, key=lambda item: str(item["guest"])) if broken else listed


@router.get(
    "/policies/{guest}",
    responses={200: {"content": {"application/json": {}, "application/yaml": {}}}},
)
def get_policy(
    guest: GuestPath,
    who: Reader,
    store: Store,
    response: Response,
    accept: Annotated[str | None, Header()] = None,
) -> Any:
    """One guest's policy; the ETag is its revision. With ``Accept: application/yaml``
    the policy document alone, as ``virtpolicy policy get`` prints it."""
    stored = store.get(guest)
    etag = f'"{stored.revision}"'
    if accept and "application/yaml" in accept and "json" not in accept:
        text = dump_yaml([stored.policy])
        return PlainTextResponse(text, media_type="application/yaml", headers={"ETag": etag})
    response.headers["ETag"] = etag
    return _stored(stored)


@router.put("/policies/{guest}", openapi_extra=schemas.POLICY_BODY)
async def put_policy(
    guest: GuestPath,
    request: Request,
    who: Writer,
    store: Store,
    response: Response,
    if_match: IfMatch = None,
) -> dict[str, Any]:
    """Create or replace a guest's policy; the body is the whole document."""

    def validated(doc: dict[str, Any]) -> GuestPolicy:
        doc.setdefault("guest", guest)
        if doc["guest"] != guest:
            shown = quoted(doc["guest"]) if isinstance(doc["guest"], str) else str(doc["guest"])
            raise PolicyError(
                f"guest: {shown[:80]} does not match the URL ({quoted(guest)})", field="guest"
            )
        return parse_policy(doc)

    policy = await json_object(request, validated)
    return await _written(
        request,
        response,
        if_match,
        lambda expect: changes.put_policy(
            store, policy, actor=who.actor, expect=expect, may_exec=who.role == "admin"
        ),
    )


@router.patch("/policies/{guest}", openapi_extra=schemas.PATCH_BODY)
async def patch_policy(
    guest: GuestPath,
    request: Request,
    who: Writer,
    store: Store,
    response: Response,
    if_match: IfMatch = None,
) -> dict[str, Any]:
    """Change some fields: a JSON merge patch, with requires/wants keyed by guest."""
    patch = await json_object(request, _as_is)
    return await _written(
        request,
        response,
        if_match,
        lambda expect: changes.set_policy(
            store, guest, patch, actor=who.actor, expect=expect, may_exec=who.role == "admin"
        ),
    )


@router.delete("/policies/{guest}")
async def delete_policy(
    guest: GuestPath,
    request: Request,
    who: Writer,
    store: Store,
    response: Response,
    if_match: IfMatch = None,
) -> dict[str, Any]:
    """Delete a guest's policy (history keeps it)."""
    return await _written(
        request,
        response,
        if_match,
        lambda expect: changes.delete_policy(store, guest, actor=who.actor, expect=expect),
    )


@router.get("/policies/{guest}/history")
def history(guest: GuestPath, who: Reader, store: Store) -> list[dict[str, Any]]:
    """Every revision, oldest first, with what it changed."""
    return [e.to_dict() for e in changes.history(store, guest)]


@router.post("/validate", openapi_extra=schemas.DOCUMENTS_BODY)
async def validate(request: Request, who: Reader, store: Store) -> dict[str, Any]:
    """Validate policy documents (an object or an array) against the stored
    graph, writing nothing and taking no write lock; 422 names the first problem."""
    body = await read_body(request, yaml=True)
    docs = await asyncio.to_thread(lambda: check_unique(parse_documents(body, "body")))
    outcomes = await asyncio.to_thread(
        store.write, [Put(d.policy) for d in docs], who.actor, dry_run=True
    )
    return {"valid": True, "changes": [_change(o) for o in outcomes]}


@router.post("/apply", openapi_extra=schemas.DOCUMENTS_BODY)
async def apply(
    request: Request,
    who: Writer,
    store: Store,
    prune: bool = False,
    dry_run: bool = False,
) -> dict[str, Any]:
    """Make the store hold exactly these policies (JSON array or YAML stream):
    all or nothing, idempotent; with ``dry_run`` report diffs and write nothing."""
    body = await read_body(request, yaml=True)
    docs = await asyncio.to_thread(lambda: check_unique(parse_documents(body, "body")))
    outcomes = await asyncio.to_thread(
        lambda: changes.apply_policies(
            store,
            [d.policy for d in docs],
            actor=who.actor,
            prune=prune,
            dry_run=dry_run,
            may_exec=who.role == "admin",
        )
    )
    if not dry_run:
        notify_daemon(request, outcomes)
    return {"dry_run": dry_run, "results": [_change(o, diff=dry_run) for o in outcomes]}


@router.get("/guests/{guest}/dependents", tags=["plans"])
def dependents(guest: GuestPath, who: Reader, store: Store) -> dict[str, Any]:
    """Who depends on ``guest``: what stopping it would stop first, in order."""
    waves = planning.plan(store, "stop", [guest])
    before = [[g for g in wave if g != guest] for wave in waves]
    return {
        "guest": guest,
        "dependents": sorted(g for wave in before for g in wave),
        "stop_waves": [wave for wave in before if wave],
    }


@router.get("/plan/{operation}", tags=["plans"])
def plan(operation: str, who: Reader, store: Store, guest: Guests = None) -> dict[str, Any]:
    """Start or stop waves for the given guests (none: every guest)."""
    if operation not in ("start", "stop"):
        raise NotFoundError(f'no plan "{operation}": start or stop')
    names = [guest_name(g) for g in guest or ()] or None
    return {"waves": planning.plan(store, "start" if operation == "start" else "stop", names)}


def _as_is(doc: dict[str, Any]) -> dict[str, Any]:
    return doc


def _if_match(header: str | None) -> int | None:
    if header is None:
        return None
    if not re.fullmatch(schemas.ETAG_PATTERN, header):
        raise PolicyError(
            f"If-Match: {quoted(header, 40)} is not a revision ETag", field="If-Match"
        )
    return int(header.strip(" \t").removeprefix("W/").strip('"'))


async def _written(
    request: Request,
    response: Response,
    if_match: str | None,
    action: Callable[[int | None], Outcome],
) -> dict[str, Any]:
    """Run a write (in a thread) guarded by If-Match (412 when stale), wake the
    daemon, answer."""
    expect = _if_match(if_match)
    try:
        outcome = await asyncio.to_thread(action, expect)
    except ConflictError as exc:
        if expect is None:
            raise
        raise PreconditionFailedError(exc.guest, exc.expected, exc.actual) from exc
    notify_daemon(request, [outcome])
    return _outcome(outcome, response)


def _stored(stored: StoredPolicy) -> dict[str, Any]:
    return {
        "guest": stored.policy.guest,
        "revision": stored.revision,
        "updated_at": stored.updated_at,
        "updated_by": stored.updated_by,
        "policy": json.loads(stored.policy.canonical_json()),
    }


def _change(o: Outcome, *, diff: bool = False) -> dict[str, Any]:
    result = outcome_result(o, diff=diff)
    return {
        "guest": result.guest,
        "action": result.action,
        "revision": result.revision,
        "changes": result.changes,
        **({"diff": result.diff} if diff else {}),
    }


def _outcome(o: Outcome, response: Response) -> dict[str, Any]:
    response.headers["ETag"] = f'"{o.revision}"'
    if o.action == "create":
        response.status_code = 201
    return _change(o)
