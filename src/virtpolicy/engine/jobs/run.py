"""Jobs: an orchestrated start or stop, recorded in the store while it runs.

A job is run by the daemon (``POST /v1/jobs``, autostart, a dependency that
stopped) or by the CLI in-process. Its record says who runs it: the runner,
the host and the process (``PID:STARTTIME``, so that a reused PID is not
taken for the same process). Progress is written every
:data:`FLUSH_INTERVAL_S` and at the end; a guest being started or stopped is
recorded as such. A job whose process died is settled
(:mod:`virtpolicy.engine.jobs.settle`).

In a fleet a job is one record with a step per guest for the daemon of the
guest's host. The daemon that records it takes up its own host's steps;
every other daemon takes up its own at its next heartbeat
(:meth:`JobRun.take_up`). Each runs the whole plan, starting or stopping
only its own guests and awaiting the others' outcomes from the store (a
step of a host that is lost or left fails, with that reason), and whoever
finds every step done records how the job ended.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Annotated, Any, Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from virtpolicy import loopguard
from virtpolicy.engine.jobs.conditions import Commands
from virtpolicy.engine.jobs.migrate import Migrator, Verdict
from virtpolicy.engine.jobs.orchestrate import GuestResult, Orchestrator, Progress
from virtpolicy.engine.jobs.settle import this_process
from virtpolicy.errors import HypervisorError, PolicyError, StoreError
from virtpolicy.hypervisor.base import Hypervisor
from virtpolicy.policy.graph import start_waves, stop_waves
from virtpolicy.policy.model import (
    GuestName,
    GuestPolicy,
    HostName,
    describe_validation_error,
    whole_numbers,
)
from virtpolicy.policy.text import quoted
from virtpolicy.store.base import GuestState, HostRecord, JobStore, Policies
from virtpolicy.store.jobrecords import FAILED, IN_FLIGHT, UP, Job, JobState, Result, Step

log = logging.getLogger(__name__)

FLUSH_INTERVAL_S = 0.5
#: How often a job reads the other hosts' steps while it awaits one.
WATCH_S = 0.5


class JobFleet(Protocol):
    """What a job needs to know of the fleet (the daemon's membership)."""

    name: str

    def host_of(self, guest: str) -> str | None:
        """The other host, up, where ``guest`` is defined; None: none (this one)."""

    def here(self, guest: str) -> bool:
        """Whether ``guest`` is defined on this host."""

    def chosen(
        self, where: Iterable[tuple[GuestState, HostRecord | None]], now: float
    ) -> str | None:
        """Of the hosts where a guest is, as read now, the one to run its step."""

    def host_state(self, host: str) -> str:
        """``up``, ``lost`` or ``left`` as last read; ``unknown`` for no such host."""

    def agent_ready(self, guest: str, condition: str) -> bool:
        """Whether ``guest``'s host last reported ``condition`` (agent) holding."""

    def saw_running(self, guest: str, host: str) -> None:
        """``host`` reports ``guest`` up in a job: admission here knows at once."""


class JobRequest(BaseModel):
    """What to start or stop: named guests, every guest with a policy, or a label;
    or the named guests to migrate, and the host to migrate them ``to``."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    action: Literal["start", "stop", "migrate"]
    guests: list[GuestName] = []
    all: bool = False
    labels: dict[str, str] = {}
    concurrency: Annotated[int, Field(ge=1, le=256)] = 8
    to: HostName | None = None

    @model_validator(mode="after")
    def _one_selection(self) -> JobRequest:
        if (self.action == "migrate") != (self.to is not None):
            raise PolicyError("a migrate job names its host, and only it", field="to")
        if self.action == "migrate" and not self.guests:
            raise PolicyError("a migrate job names its guests", field="guests")
        if sum(map(bool, (self.guests, self.all, self.labels))) != 1:
            raise ValueError("name guests, or give all or labels: exactly one of them")
        seen: set[str] = set()
        for guest in self.guests:
            if guest in seen:
                raise PolicyError(f"{quoted(guest)} is named twice", field="guests")
            seen.add(guest)
        return self


@loopguard.off_loop
def parse_job_request(doc: object) -> JobRequest:
    """A :class:`JobRequest` from JSON data; PolicyError (one line) if it is not one."""
    try:
        return JobRequest.model_validate(whole_numbers(doc))
    except ValidationError as exc:
        raise describe_validation_error(exc) from None
    except RecursionError:
        raise PolicyError("body: nested too deeply to be a job request") from None


def select(store: Policies, request: JobRequest) -> tuple[dict[str, GuestPolicy], list[str] | None]:
    """The stored policies by guest, and the roots the request names (None: all)."""
    policies = {s.policy.guest: s.policy for s in store.list_policies()}
    if request.all:
        return policies, None
    if request.labels:
        return policies, [s.policy.guest for s in store.list_policies(request.labels)]
    return policies, list(request.guests)


# -- running --------------------------------------------------------------------


@contextlib.contextmanager
def local_run(store: JobStore, uri: str, request: JobRequest, actor: str) -> Iterator[JobRun]:
    """A job run in this process on a connection of its own to ``uri`` (the CLI
    with no daemon to ask), closed when the block ends."""
    from virtpolicy.hypervisor.connection import LibvirtConnection  # noqa: PLC0415 (libvirt)

    hypervisor = LibvirtConnection(uri)
    hypervisor.open()
    try:
        yield JobRun(store, hypervisor, request, actor, "cli")
    finally:
        hypervisor.close()


@dataclass
class JobRun:
    """One job (or this host's part of it): its orchestrator, its record, and its
    live progress."""

    store: JobStore
    hypervisor: Hypervisor
    request: JobRequest
    actor: str
    runner: str
    progress: Progress = lambda _g, _e, _d: None
    commands: Commands = field(default_factory=Commands.as_caller)
    on_holds: Callable[[str, str], None] = lambda _g, _c: None
    fleet: JobFleet | None = None
    #: Why a guest may not start (the daemon's admission); None: not checked.
    admit: Callable[[str], Awaitable[list[str]]] | None = None
    #: The destination's verdict on a guest migrating to a host (a migrate job).
    ask: Callable[[str, str], Awaitable[Verdict]] | None = None
    job: Job | None = None
    #: The guests whose steps this run took up (started or stopped here).
    mine: set[str] = field(default_factory=set)
    live: dict[str, Step] = field(default_factory=dict)
    results: list[GuestResult] = field(default_factory=list)
    _dirty: bool = False
    # Other hosts' guests: their outcomes awaited, their rows as last read, and
    # the task reading them (while one is awaited).
    _others: dict[str, asyncio.Future[tuple[str, str]]] = field(default_factory=dict)
    _seen_others: dict[str, Step] = field(default_factory=dict)
    _watch: asyncio.Task[None] | None = None
    _orchestrator: Orchestrator | Migrator = field(init=False)

    @property
    def host_name(self) -> str:
        return self.fleet.name if self.fleet is not None else socket.gethostname()

    def plan(self) -> list[list[str]]:
        """Load the policies and check the graph (CycleError) before anything runs;
        a migration's guests one after another."""
        if self.request.action == "migrate":
            self._policies: dict[str, GuestPolicy] = {}
            self._roots: list[str] | None = list(self.request.guests)
            return [[g] for g in self.request.guests]
        self._policies, self._roots = select(self.store, self.request)
        edges = {g: p.dependencies() for g, p in self._policies.items()}
        if self.request.action == "start":
            return start_waves(edges, self._roots)
        return stop_waves(edges, self._roots)

    def record(self) -> Job:
        """Plan, record the job as running with a step per guest for its host, and
        take up this host's steps; what :meth:`run` then runs."""
        guests = [g for wave in self.plan() for g in wave]
        hosts = self._hosts(guests)
        job = self.store.add_job(
            self.request.action,
            self.request.model_dump(exclude_defaults=True),
            guests,
            runner=self.runner,
            host=self.host_name,
            process=this_process(),
            actor=self.actor,
            hosts=hosts,
        )
        return self._take(job)

    def _hosts(self, guests: list[str]) -> dict[str, str]:
        """(In a thread.) The host of each guest defined elsewhere: as the fleet was
        last read, and for a guest that read does not place, as the store has it
        now (a host may have published it since: a beat is seconds)."""
        fleet = self.fleet
        if fleet is None:
            return {}
        hosts = {g: h for g in guests if (h := fleet.host_of(g))}
        unplaced = [g for g in guests if g not in hosts and not fleet.here(g)]
        if unplaced:
            records = {h.name: h for h in self.store.hosts()}
            now = time.time()
            found: dict[str, list[GuestState]] = {}
            for row in self.store.guest_states(guests=unplaced):
                found.setdefault(row.guest, []).append(row)
            for guest, rows in found.items():
                if host := fleet.chosen([(r, records.get(r.host)) for r in rows], now):
                    hosts[guest] = host
        return hosts

    def take_up(self, job: Job) -> Job | None:
        """Take up this host's steps of another daemon's job (None: none left)."""
        self.plan()
        self._take(job)
        return job if self.mine else None

    def _take(self, job: Job) -> Job:
        # Seconds since the job was recorded, the same on every host of the fleet.
        self._t0 = datetime.fromisoformat(job.created_at).timestamp()
        self.job = job
        self.mine = set(self.store.claim_steps(job.id, self.host_name))
        remote = self if set(job.hosts) - self.mine else None
        if self.request.action == "migrate":
            to, ask = self.request.to, self.ask
            assert to is not None, "a migrate job names its host"
            assert ask is not None, "a migrate job is the daemon's"
            self._orchestrator = Migrator(
                self.hypervisor, to, lambda g: ask(g, to), self._seen, remote
            )
            return job
        self._orchestrator = Orchestrator(
            self.hypervisor,
            self._policies,
            self.request.concurrency,
            progress=self._seen,
            commands=self.commands,
            on_holds=self.on_holds,
            admit=self.admit,
            # Other hosts' guests are theirs to start and stop, and to report.
            remote=remote,
        )
        return job

    async def run(self, progress: Progress | None = None) -> Job:
        """Run the recorded job to its end, telling ``progress`` (default: the
        run's own) of each guest as it moves; the final record."""
        assert self.job is not None, "record() first"
        if progress is not None:
            self.progress = progress
        work = self._orchestrator
        action = (
            work.migrate
            if isinstance(work, Migrator)
            else work.start
            if self.request.action == "start"
            else work.stop
        )
        flusher = asyncio.create_task(self._flush_now_and_then())
        try:
            self.results = await action(self._roots)
        except BaseException as exc:  # cancelled (the daemon stops) or a bug
            why = "cancelled" if isinstance(exc, asyncio.CancelledError) else repr(exc)
            try:
                detail = f"the {self.runner} on {self.host_name} stopped the job: {why}"
                await asyncio.to_thread(self._write, "interrupted", detail)
            except StoreError as store_exc:  # do not hide why the job ended
                log.error("job %s: %s", self.job.id, store_exc)
            raise
        finally:
            flusher.cancel()
            if self._watch is not None:
                self._watch.cancel()
        await asyncio.to_thread(self._write, "running", "")
        return await asyncio.to_thread(self._end)

    def _end(self) -> Job:
        """(In a thread.) Record how the job ended once every step is done (any
        daemon of the job may be the last; the first to record it wins)."""
        assert self.job is not None
        job = self.store.job(self.job.id)
        if job.state != "running" or len(job.results) < len(job.hosts):
            return job
        if any(r["result"] in IN_FLIGHT for r in job.results):
            return job
        counts: dict[str, int] = {}
        for r in job.results:
            counts[r["result"]] = counts.get(r["result"], 0) + 1
        failed = any(r["result"] in FAILED for r in job.results)
        summary = ", ".join(f"{n} {result}" for result, n in counts.items())
        state: JobState = "failed" if failed else "succeeded"
        self.store.update_job(job.id, [], state=state, detail=summary or "nothing to do")
        return self.store.job(job.id)

    def view(self) -> dict[str, Any]:
        """The job as the API shows it, current to the last guest that moved."""
        assert self.job is not None
        rows = [*self._seen_others.values(), *self.live.values()]
        return {**self.job.to_dict(), "results": rows}

    # -- the other hosts' guests (Remote, for the orchestrator) ---------------------

    def owns(self, guest: str) -> bool:
        return guest in self.mine

    async def outcome(self, guest: str) -> tuple[str, str]:
        assert self.job is not None
        if guest not in self.job.hosts:
            return Result.FAILED, f"{guest} was not part of job {self.job.id} when it was recorded"
        future = self._others.get(guest)
        if future is None:
            future = self._others[guest] = asyncio.get_running_loop().create_future()
        if self._watch is None:
            self._watch = asyncio.create_task(self._watch_others())
        return await asyncio.shield(future)

    def agent_ping(self, guest: str) -> None:
        assert self.job is not None
        if self.fleet is None or not self.fleet.agent_ready(guest, "agent"):
            host = self.job.hosts.get(guest, "its host")
            raise HypervisorError(f"{host} does not report the guest agent of {guest} answering")

    async def _watch_others(self) -> None:
        """Read the job's steps until every awaited guest of another host is done."""
        assert self.job is not None
        job_id = self.job.id
        while True:
            waiting = {g: f for g, f in self._others.items() if not f.done()}
            if waiting:
                job = await asyncio.to_thread(self.store.job, job_id)
                rows = {r["guest"]: r for r in job.results if r["guest"] not in self.mine}
                self._seen_others = rows
                gone = []
                for guest, future in waiting.items():
                    row = rows.get(guest)
                    if row is not None and row["result"] not in IN_FLIGHT:
                        if self.fleet is not None and row["result"] in UP:
                            self.fleet.saw_running(guest, row["host"])
                        future.set_result((row["result"], row["detail"]))
                        continue
                    host = job.hosts[guest]
                    state = self.fleet.host_state(host) if self.fleet else "up"
                    if state != "up":
                        detail = f"its host {host} is {state}: no daemon finished its step"
                        gone.append(self._row(guest, Result.FAILED, detail))
                if gone:  # a step done stays done: a host that came back is not undone
                    await asyncio.to_thread(self.store.update_job, job_id, gone)
                    continue
            await asyncio.sleep(WATCH_S)

    # -- progress -----------------------------------------------------------------------

    def _row(self, guest: str, event: str, detail: str) -> Step:
        seconds = round(max(0.0, time.time() - self._t0), 6)  # µs: the order they finished in
        return Step(guest=guest, host=self.host_name, result=event, seconds=seconds, detail=detail)

    def _seen(self, guest: str, event: str, detail: str) -> None:
        if self._orchestrator.remote is not None and guest not in self.mine:
            return  # another host's guest: its host reports it
        self.live[guest] = self._row(guest, event, detail)
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
    hosts = job.get("hosts", {})
    rows = [
        GuestResult(
            r["guest"],
            Result(r["result"]),
            r["seconds"],
            r["detail"],
            r.get("host", hosts.get(r["guest"], "")),
        )
        for r in done
    ]
    reached = {r["guest"] for r in done}
    pending = Result.WAITING if job["state"] == "running" else Result.NOT_REACHED
    rows += [
        GuestResult(g, pending, 0.0, host=hosts.get(g, ""))
        for g in job["guests"]
        if g not in reached
    ]
    return rows
