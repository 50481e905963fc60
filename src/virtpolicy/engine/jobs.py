"""Jobs: an orchestrated start or stop, recorded in the store while it runs.

A job is run by the daemon (``POST /v1/jobs``, autostart, a dependency that
stopped) or by the CLI in-process. Its record says who runs it: the runner,
the host and the process (``PID:STARTTIME``, so that a reused PID is not
taken for the same process). Progress is written every
:data:`FLUSH_INTERVAL_S` and at the end; a guest being started or stopped is
recorded as such. A job whose process died is found by :func:`settle`
(reading the job list, and the daemon at start-up): it becomes
``interrupted``, and the guests it was starting say so.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from virtpolicy.engine.conditions import Commands
from virtpolicy.engine.host import Host
from virtpolicy.engine.orchestrate import IN_FLIGHT, GuestResult, Orchestrator, Progress
from virtpolicy.errors import StoreError
from virtpolicy.policy.model import GuestName, describe_validation_error
from virtpolicy.policy.numbers import ascii_int
from virtpolicy.store.base import Job, JobState, PolicyStore

log = logging.getLogger(__name__)

FLUSH_INTERVAL_S = 0.5


class JobRequest(BaseModel):
    """What to start or stop: named guests, every guest with a policy, or a label."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    action: Literal["start", "stop"]
    guests: list[GuestName] = []
    all: bool = False
    labels: dict[str, str] = {}
    concurrency: int = Field(8, ge=1, le=256)

    @model_validator(mode="after")
    def _one_selection(self) -> JobRequest:
        if sum(map(bool, (self.guests, self.all, self.labels))) != 1:
            raise ValueError("name guests, or give all or labels: exactly one of them")
        return self


def parse_job_request(doc: object) -> JobRequest:
    """A :class:`JobRequest` from JSON data; PolicyError (one line) if it is not one."""
    try:
        return JobRequest.model_validate(doc)
    except ValidationError as exc:
        raise describe_validation_error(exc) from None


def select(store: PolicyStore, request: JobRequest) -> tuple[dict[str, Any], list[str] | None]:
    """The stored policies by guest, and the roots the request names (None: all)."""
    policies = {s.policy.guest: s.policy for s in store.list_policies()}
    if request.all:
        return policies, None
    if request.labels:
        return policies, [s.policy.guest for s in store.list_policies(request.labels)]
    return policies, list(request.guests)


# -- processes ------------------------------------------------------------------


def _start_time(pid: int) -> str | None:
    """The start time of process ``pid`` in clock ticks since boot, if it exists."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as stat:
            line = stat.read()
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses: split after it.
    return line.rpartition(")")[2].split()[19]


def this_process() -> str:
    pid = os.getpid()
    return f"{pid}:{_start_time(pid)}"


def process_alive(process: str) -> bool:
    pid_text, _, started = process.partition(":")
    pid = ascii_int(pid_text, max_digits=10)
    return pid is not None and _start_time(pid) == started


def settle(store: PolicyStore, host: str | None = None) -> list[Job]:
    """Mark jobs of this host whose process has died as ``interrupted``."""
    host = host or socket.gethostname()
    settled = []
    for job in store.jobs(state="running", limit=1000):
        if job.host != host or process_alive(job.process):
            continue
        pid = job.process.partition(":")[0]
        results = [
            {
                **r,
                "result": "interrupted",
                "detail": f"was {r['result']} when the job's process ended; check its state",
            }
            if r["result"] in IN_FLIGHT
            else r
            for r in job.results
        ]
        done = sum(1 for r in job.results if r["result"] not in IN_FLIGHT)
        detail = (
            f"the {job.runner} running this job (pid {pid} on {host}) ended before it did; "
            f"{done} of {len(job.guests)} guests were done"
        )
        if store.update_job(job.id, results, state="interrupted", detail=detail):
            settled.append(store.job(job.id))
    return settled


# -- running --------------------------------------------------------------------


@contextlib.contextmanager
def local_run(store: PolicyStore, uri: str, request: JobRequest, actor: str) -> Iterator[JobRun]:
    """A job run in this process on a connection of its own to ``uri`` (the CLI
    with no daemon to ask), closed when the block ends."""
    from virtpolicy.hypervisor.connection import Hypervisor  # noqa: PLC0415 (libvirt)

    hypervisor = Hypervisor(uri)
    hypervisor.open()
    try:
        yield JobRun(store, hypervisor, request, actor, "cli")
    finally:
        hypervisor.close()


@dataclass
class JobRun:
    """One job: its orchestrator, its record, and its live progress."""

    store: PolicyStore
    hypervisor: Host
    request: JobRequest
    actor: str
    runner: str
    progress: Progress = lambda _g, _e, _d: None
    commands: Commands = field(default_factory=Commands.as_caller)
    on_holds: Callable[[str, str], None] = lambda _g, _c: None
    job: Job | None = None
    live: dict[str, dict[str, Any]] = field(default_factory=dict)
    results: list[GuestResult] = field(default_factory=list)
    _dirty: bool = False

    def plan(self) -> list[list[str]]:
        """Load the policies and check the graph (CycleError) before anything runs."""
        policies, self._roots = select(self.store, self.request)
        self._orchestrator = Orchestrator(
            self.hypervisor,
            policies,
            self.request.concurrency,
            progress=self._seen,
            commands=self.commands,
            on_holds=self.on_holds,
        )
        if self.request.action == "start":
            return self._orchestrator.start_plan(self._roots)
        return self._orchestrator.stop_plan(self._roots)

    def record(self) -> Job:
        """Plan, and record the job as running; what :meth:`run` then runs."""
        waves = self.plan()
        self._t0 = time.monotonic()
        self.job = self.store.add_job(
            self.request.action,
            self.request.model_dump(exclude_defaults=True),
            [g for wave in waves for g in wave],
            runner=self.runner,
            host=socket.gethostname(),
            process=this_process(),
            actor=self.actor,
        )
        return self.job

    async def run(self) -> Job:
        """Run the recorded job to its end; the final record."""
        assert self.job is not None, "record() first"
        action = (
            self._orchestrator.start if self.request.action == "start" else self._orchestrator.stop
        )
        flusher = asyncio.create_task(self._flush_now_and_then())
        try:
            self.results = await action(self._roots)
        except BaseException as exc:  # cancelled (the daemon stops) or a bug
            flusher.cancel()
            why = "cancelled" if isinstance(exc, asyncio.CancelledError) else repr(exc)
            try:
                detail = f"the {self.runner} stopped the job: {why}"
                await asyncio.to_thread(self._write, "interrupted", detail)
            except StoreError as store_exc:  # do not hide why the job ended
                log.error("job %s: %s", self.job.id, store_exc)
            raise
        flusher.cancel()
        failed = [r for r in self.results if not r.ok]
        state: JobState = "failed" if failed else "succeeded"
        counts: dict[str, int] = {}
        for r in self.results:
            counts[r.result] = counts.get(r.result, 0) + 1
        summary = ", ".join(f"{n} {result}" for result, n in counts.items())
        await asyncio.to_thread(self._write, state, summary or "nothing to do")
        return await asyncio.to_thread(self.store.job, self.job.id)

    def view(self) -> dict[str, Any]:
        """The job as the API shows it, current to the last guest that moved."""
        assert self.job is not None
        return {
            **self.job.to_dict(),
            "results": list(self.live.values()),
        }

    def _seen(self, guest: str, event: str, detail: str) -> None:
        seconds = round(time.monotonic() - self._t0, 3)
        self.live[guest] = {"guest": guest, "result": event, "seconds": seconds, "detail": detail}
        self._dirty = True
        self.progress(guest, event, detail)

    async def _flush_now_and_then(self) -> None:
        while True:
            await asyncio.sleep(FLUSH_INTERVAL_S)
            if self._dirty:
                self._dirty = False
                await asyncio.to_thread(self._write, "running", "")

    def _write(self, state: JobState, detail: str) -> None:
        assert self.job is not None
        self.store.update_job(self.job.id, list(self.live.values()), state=state, detail=detail)


def result_rows(job: Mapping[str, Any]) -> list[GuestResult]:
    """Every guest of a job, in the order they finished, then those not reached."""
    done = sorted(job["results"], key=lambda r: r["seconds"])
    rows = [GuestResult(r["guest"], r["result"], r["seconds"], r["detail"]) for r in done]
    reached = {r["guest"] for r in done}
    pending = "waiting" if job["state"] == "running" else "not reached"
    rows += [GuestResult(g, pending, 0.0) for g in job["guests"] if g not in reached]
    return rows
