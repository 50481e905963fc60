"""The jobs the daemon runs: submitted through the API, autostart at boot,
stopping the dependents of a guest that stopped (``on_dependency_stop``), and
this host's steps of jobs another host's daemon recorded (taken up at each
heartbeat, see :meth:`JobRunner.look`)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from typing import Any

from virtpolicy.engine.jobs.conditions import Commands
from virtpolicy.engine.jobs.migrate import Verdict, destination_refusals
from virtpolicy.engine.jobs.run import JobFleet, JobRequest, JobRun
from virtpolicy.engine.runtime.bus import EventBus
from virtpolicy.engine.runtime.states import GuestStates
from virtpolicy.errors import ConnectionLostError, NotFoundError, RefusedError, VirtpolicyError
from virtpolicy.hypervisor.base import Hypervisor
from virtpolicy.policy.model import GuestPolicy
from virtpolicy.policy.text import printable
from virtpolicy.store.base import JobStore
from virtpolicy.store.jobrecords import IN_FLIGHT, UP, Result

log = logging.getLogger(__name__)

CONNECT_WAIT_S = 5.0


class JobRunner:
    """Records jobs and runs them in the background on the daemon's loop."""

    def __init__(
        self,
        store: JobStore,
        hypervisor: Hypervisor,
        events: EventBus,
        states: GuestStates,
        connected: asyncio.Event,
        notice: Callable[[str, str], None],
        commands: Commands,
        on_holds: Callable[[str, str], None],
        admission: Callable[[str], Awaitable[list[str]]],
        fleet: JobFleet | None = None,
        moved: Callable[[str], None] = lambda _g: None,
    ) -> None:
        #: Asked before each guest a job starts: the same answer as libvirt's hook
        #: gets, so a job on a host without the hook admits what the hook would.
        self.admission = admission
        self.commands = commands
        self.on_holds = on_holds
        self.store = store
        self.hypervisor = hypervisor
        self.events = events
        self.states = states
        self.connected = connected
        self.notice = notice
        #: Told of a guest that migrated away (libvirt sends no event once its
        #: definition is gone from here: a pass finds it so and frees its place).
        self.moved = moved
        self._jobs: dict[int, JobRun] = {}
        self._background: set[asyncio.Task[None]] = set()
        #: The fleet this daemon is part of.
        self.fleet = fleet
        self._looking = False

    async def submit(self, request: JobRequest, actor: str) -> dict[str, Any]:
        """Record a start or stop job and run it in the background; the job as recorded.

        Refused (and nothing recorded) when the graph has a cycle, or when
        libvirt is not connected within :data:`CONNECT_WAIT_S` (a daemon that
        just started is still connecting).
        """
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(CONNECT_WAIT_S):
                await self.connected.wait()
        if not self.connected.is_set():
            raise ConnectionLostError(
                f"not connected to {self.hypervisor.uri}: cannot {request.action} guests now"
            )
        if request.to is not None:  # a migration: refused before anything moves
            for guest in request.guests:
                verdict = await self.destination(guest, request.to)
                if verdict.reasons:
                    why = "; ".join(verdict.reasons)
                    names = f"{printable(guest)} cannot migrate to {printable(request.to)}"
                    raise RefusedError(f"{names}: {why}")
        run = await self._record(request, actor)
        self.in_background(self._run(run))
        return run.view()

    async def destination(self, guest: str, to: str) -> Verdict:
        """May ``guest`` migrate to host ``to``, as the fleet's records have it now?
        Its policy read from the store (held or not here); nothing written."""

        here = self.fleet.name if self.fleet and self.states.running(guest) else None

        def read() -> Verdict:
            try:
                policy: GuestPolicy | None = self.store.get(guest).policy
            except NotFoundError:
                policy = None
            return destination_refusals(self.store, guest, to, policy, here)

        return await asyncio.to_thread(read)

    def view(self, job_id: int) -> dict[str, Any] | None:
        """A job this daemon is running, current to the guest; None if not running here."""
        run = self._jobs.get(job_id)
        return run.view() if run else None

    def in_background(self, work: Coroutine[Any, Any, None]) -> None:
        """Run ``work`` alongside the loop; cancelled by :meth:`cancel`."""
        task = asyncio.create_task(work)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def cancel(self) -> None:
        """Cancel every job in flight (the daemon stops); each is recorded as interrupted."""
        tasks = list(self._background)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def autostart(self, policies: Mapping[str, GuestPolicy]) -> None:
        """Start guests with ``start.autostart`` in dependency order, as one job.
        Their hooks ask the daemon while it starts them."""
        roots = sorted(g for g, p in policies.items() if p.start.autostart)
        if roots:
            await self._own(JobRequest(action="start", guests=roots), "virtpolicy (autostart)")

    async def dependency_stopped(
        self, dependency: str, what: str, policies: Mapping[str, GuestPolicy]
    ) -> None:
        """``dependency`` stopped or crashed: tell the running guests that require it,
        and stop those whose policy says ``stop.on_dependency_stop: stop``."""
        to_stop = []
        for guest, policy in sorted(policies.items()):
            if not self.states.running(guest) or all(
                d.guest != dependency for d in policy.requires
            ):
                continue
            action = policy.stop.on_dependency_stop
            text = f"required dependency {dependency} {what}"
            if action == "stop":
                text += "; stopping this guest (on_dependency_stop: stop)"
                to_stop.append(guest)
            self.notice(guest, text)
            log.warning("dependency guest=%s %s", guest, text)
            self.events.publish(
                "dependency", guest=guest, dependency=dependency, event=what, action=action
            )
        if to_stop:
            request = JobRequest(action="stop", guests=to_stop)
            await self._own(request, f"virtpolicy (on_dependency_stop of {dependency})")

    def look(self) -> None:
        """Take up this host's steps of jobs recorded elsewhere (at each heartbeat)."""
        if not self._looking and self.fleet is not None and self.connected.is_set():
            self._looking = True
            self.in_background(self._take_up(self.fleet))

    async def _take_up(self, fleet: JobFleet) -> None:
        try:
            pending = await asyncio.to_thread(self.store.pending_jobs, fleet.name)
            for job_id in pending:
                if job_id in self._jobs:
                    continue
                job = await asyncio.to_thread(self.store.job, job_id)
                to = job.request.get("to") if job.action == "migrate" else None
                request = JobRequest(
                    action="migrate" if to else "start" if job.action == "start" else "stop",
                    guests=list(job.guests),
                    concurrency=int(job.request.get("concurrency", 8)),
                    to=str(to) if to else None,
                )
                run = self._job_run(request, job.actor)
                if await asyncio.to_thread(run.take_up, job) is not None:
                    self._jobs[job_id] = run
                    log.info("job %d: took up %d guests of %s", job_id, len(run.mine), job.host)
                    self.in_background(self._run(run))
        except VirtpolicyError as exc:
            log.warning("jobs of other hosts: %s", exc)
        finally:
            self._looking = False

    async def _own(self, request: JobRequest, actor: str) -> None:
        """Run a job of the daemon's own to its end."""
        try:
            run = await self._record(request, actor)
        except VirtpolicyError as exc:
            log.error("%s %s: %s", actor, request.action, exc)
            return
        await self._run(run)

    def _job_run(self, request: JobRequest, actor: str) -> JobRun:
        def progress(guest: str, event: str, detail: str) -> None:
            self._progress(run, guest, event, detail)

        run = JobRun(
            self.store,
            self.hypervisor,
            request,
            actor,
            "daemon",
            commands=self.commands,
            on_holds=self.on_holds,
            progress=progress,
            fleet=self.fleet,
            admit=self._admit,
            ask=self.destination,
        )
        return run

    async def _admit(self, guest: str) -> list[str]:
        """Why a job may not start ``guest`` now; nothing for one that runs."""
        if self.states.running(guest):
            return []
        return await self.admission(guest)

    async def _record(self, request: JobRequest, actor: str) -> JobRun:
        run = self._job_run(request, actor)
        job = await asyncio.to_thread(run.record)
        self._jobs[job.id] = run
        self.events.publish(
            "job",
            job=job.id,
            state=job.state,
            action=job.action,
            actor=job.actor,
            guests=list(job.guests),
        )
        return run

    async def _run(self, run: JobRun) -> None:
        assert run.job is not None
        try:
            job = await run.run()
            log.info("job %d %s: %s", job.id, job.state, job.detail)
            self.events.publish("job", job=job.id, state=job.state, detail=job.detail)
        except VirtpolicyError as exc:
            log.error("job %d: %s", run.job.id, exc)
            self.events.publish("job", job=run.job.id, state="interrupted", detail=str(exc))
        finally:
            self._jobs.pop(run.job.id, None)

    def _progress(self, run: JobRun, guest: str, event: str, detail: str) -> None:
        if event in UP:
            # Before any dependent starts, so that its hook sees this one up.
            self.states.record(guest, "started")
        if event == Result.MIGRATED:
            self.moved(guest)
        assert run.job is not None
        self.events.publish("job", job=run.job.id, guest=guest, result=event, detail=detail)
        if event not in IN_FLIGHT:
            log.info("job=%d guest=%s %s%s", run.job.id, guest, event, f": {detail}" * bool(detail))
