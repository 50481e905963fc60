"""Routes for jobs: orchestrated starts and stops that the daemon runs."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request, Response

from virtpolicy.api import schemas
from virtpolicy.api.deps import DaemonDep, Reader, Store, Writer, json_object
from virtpolicy.engine.jobs.run import parse_job_request
from virtpolicy.engine.jobs.settle import interrupted
from virtpolicy.store.jobrecords import Job, JobState

router = APIRouter(prefix="/v1", tags=["jobs"], responses=schemas.ERRORS)


@router.post("/jobs", status_code=202, openapi_extra=schemas.JOB_BODY)
async def submit(
    request: Request, response: Response, who: Writer, daemon: DaemonDep
) -> dict[str, Any]:
    """Start or stop guests in dependency order, in the daemon.

    The body: ``{"action": "start"|"stop"`` and one of ``"guests": [...]``,
    ``"all": true``, ``"labels": {KEY: VALUE}``, optionally ``"concurrency"``.
    Answers 202 with the job; follow it at its ``Location``.
    """
    job_request = await json_object(request, parse_job_request)
    job = await daemon.submit(job_request, who.actor)
    response.headers["Location"] = f"/v1/jobs/{job['id']}"
    return job


@router.get("/jobs")
async def list_jobs(
    who: Reader,
    store: Store,
    request: Request,
    limit: Annotated[int, Query(ge=1, le=1000)] = 20,
    state: JobState | None = None,
) -> list[dict[str, Any]]:
    """The newest jobs first: running ones current to the guest, and what happened.
    A job whose process died shows as ``interrupted`` (the daemon records it so
    at its start, the CLI at its next job; a read writes nothing)."""
    # A dead process's job is stored running and shown interrupted: ask for both.
    asked = None if state in ("running", "interrupted") else state
    jobs = await asyncio.to_thread(store.jobs, limit=limit, state=asked)
    shown = [_seen(request, job) for job in jobs]
    return [j for j in shown if state is None or j["state"] == state]


JobId = Annotated[int, Path(ge=1, le=2**62)]


@router.get("/jobs/{job_id}")
async def get_job(job_id: JobId, who: Reader, store: Store, request: Request) -> dict[str, Any]:
    """One job, with each guest's result."""
    live = _current(request, job_id)
    if live is not None:
        return live
    return _seen(request, await asyncio.to_thread(store.job, job_id))


def _seen(request: Request, job: Job) -> dict[str, Any]:
    """The job as it is now: current to the guest if this daemon runs it, shown
    interrupted if its process on this host died."""
    daemon = request.app.state.daemon
    ended = interrupted(job, daemon.this_host() if daemon is not None else None)
    return _current(request, job.id) or (ended or job).to_dict()


def _current(request: Request, job_id: int) -> dict[str, Any] | None:
    daemon = request.app.state.daemon
    return daemon.job(job_id) if daemon is not None else None
