"""The daemon's control loop: keep every guest true to its policy.

Triggers, all funnelled into one queue of "dirty" guests:

- a change in the store, noticed through its global revision counter
  (whoever wrote it: the CLI with ``--db``, the API, another process);
- libvirt lifecycle events (defined, started, resumed, ...) and tunable
  events (someone ran ``virsh vcpupin``), for the guest they name;
- a periodic pass over every guest (default every 30 s);
- a (re)connection to libvirtd: after a restart, everything is checked.

A single worker drains the queue and runs reconcile passes in a thread, so
blocking libvirt calls never stall the event loop. When libvirtd goes away,
the worker stops, the connection is reopened with exponential backoff, the
callbacks are registered again and a full pass follows.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Collection, Coroutine, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from virtpolicy.engine.admission import refusals
from virtpolicy.engine.bus import EventBus
from virtpolicy.engine.conditions import Guests
from virtpolicy.engine.dynamic import Decision, DynamicEngine
from virtpolicy.engine.jobs import JobRequest, JobRun, settle
from virtpolicy.engine.monitor import DEFAULT_INTERVAL_S, DEFAULT_WINDOW_S, Monitor
from virtpolicy.engine.orchestrate import IN_FLIGHT, Progress
from virtpolicy.engine.policies import Action
from virtpolicy.engine.policies import load as load_policies
from virtpolicy.engine.reconcile import GuestStatus, Mode, Reconciler
from virtpolicy.errors import (
    ConnectionLostError,
    GuestNotFoundError,
    HypervisorError,
    NotFoundError,
    StoreError,
    VirtpolicyError,
)
from virtpolicy.hypervisor.connection import Hypervisor
from virtpolicy.hypervisor.events import EventWatch, use_asyncio
from virtpolicy.hypervisor.native import Tuning, cap_of
from virtpolicy.policy.cpuset import parse_cpuset
from virtpolicy.policy.model import GuestPolicy
from virtpolicy.store.base import PolicyStore

log = logging.getLogger(__name__)

_ALL = "*"  # in the dirty set: every guest
_POLICY_EVENTS = 100  # more writes than this at once: one event for them all

#: The state a guest is in after a lifecycle event or hook operation.
_STATE_AFTER = {
    "started": "running",
    "resumed": "running",
    "suspended": "paused",
    "pmsuspended": "pmsuspended",
    "stopped": "shut off",
    "shutdown": "shut off",
    "crashed": "crashed",
    "release": "shut off",
}


@dataclass(frozen=True, slots=True)
class ControllerSettings:
    uri: str
    mode: Mode = "enforce"
    reconcile_interval: float = 30.0
    store_poll_interval: float = 0.5
    backoff_initial: float = 0.5
    backoff_max: float = 30.0
    autostart: bool = True
    sample_interval: float = DEFAULT_INTERVAL_S
    history: float = DEFAULT_WINDOW_S
    engines: tuple[str, ...] = ("static",)
    dry_run: bool = False
    engine_settings: Mapping[str, float] = field(default_factory=dict)


class Controller:
    """Runs until :meth:`stop`; see the module docstring."""

    def __init__(self, store: PolicyStore, settings: ControllerSettings) -> None:
        self.store = store
        self.settings = settings
        self.hypervisor = Hypervisor(settings.uri)
        self.reconciler = Reconciler(store, self.hypervisor, settings.mode)
        self.connected = asyncio.Event()
        self.passes = 0
        self._dirty: set[str] = set()
        self._wake = asyncio.Event()
        self._lost = asyncio.Event()
        self._stopping = asyncio.Event()
        self._watch = EventWatch(self.hypervisor, self._guest_event, self._connection_closed)
        self._loop: asyncio.AbstractEventLoop | None = None
        #: Every domain's state as libvirt last told us (listing, events, hook
        #: reports): what "may it start?" is answered from, never libvirt itself,
        #: whose job lock the hook's caller holds.
        self.states: dict[str, str] = {}
        self._autostarted = False
        self._background: set[asyncio.Task[None]] = set()
        self._jobs: dict[int, JobRun] = {}
        self.events = EventBus()
        self._policy_cache: tuple[int, dict[str, GuestPolicy]] | None = None
        self.dynamic = DynamicEngine.from_settings(
            load_policies(settings.engines), settings.engine_settings, dry_run=settings.dry_run
        )
        self.monitor = Monitor(settings.sample_interval, settings.history, keep=self.dynamic.window)
        self.reconciler.on_applied = lambda guest, applied: self.events.publish(
            "enforcement",
            guest=guest,
            applied={k: {"from": old, "to": new} for k, (old, new) in applied.items()},
        )

    # -- public -------------------------------------------------------------

    def request(self, guest: str | None = None) -> None:
        """Ask for a pass over ``guest`` (None: every guest)."""
        self._dirty.add(guest or _ALL)
        self._wake.set()

    def notify(self, guest: str | None) -> None:
        """Called from API request threads: schedule a pass on the loop's thread."""
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self.request, guest)

    async def admission(self, guest: str) -> list[str]:
        """Why ``guest`` may not start now (empty: it may). Never asks libvirt about it.

        Until connected (after a start or a libvirtd restart) the daemon cannot
        know: it says so (HTTP 503), and the hook follows its hook_failure mode.
        """
        if not self.connected.is_set():
            raise ConnectionLostError(
                f"not connected to {self.settings.uri} yet: cannot tell whether {guest} may start"
            )
        try:
            policy = (await asyncio.to_thread(self.store.get, guest)).policy
        except NotFoundError:
            policy = None
        guests = Guests(
            is_running=lambda g: self.states.get(g) == "running",
            agent_ping=self.hypervisor.agent_ping,
        )
        return await refusals(guest, policy, self.states, guests)

    def hook_event(self, guest: str, operation: str, phase: str) -> None:
        """libvirt's hook reports an operation: keep ``states`` current."""
        log.info("hook guest=%s %s %s", guest, operation, phase)
        if operation in ("started", "stopped", "release"):
            self.record_state(guest, operation)

    async def submit(self, request: JobRequest, actor: str) -> dict[str, Any]:
        """Record a start or stop job and run it in the background; the job as recorded.

        Refused (and nothing recorded) when the graph has a cycle, or while
        libvirt is not connected.
        """
        if not self.connected.is_set():
            raise ConnectionLostError(
                f"not connected to {self.settings.uri}: cannot {request.action} guests now"
            )
        run = await self._record_job(request, actor)
        self._in_background(self._run_job(run))
        return run.view()

    def job_view(self, job_id: int) -> dict[str, Any] | None:
        """A job this daemon is running, current to the guest; None if not running here."""
        run = self._jobs.get(job_id)
        return run.view() if run else None

    def statuses(self) -> list[GuestStatus]:
        """Every guest's status as of its last pass."""
        return self.reconciler.statuses()

    def host_info(self) -> dict[str, Any]:
        """The connection, its driver and the host's CPUs (when connected)."""
        info: dict[str, Any] = {
            "uri": self.settings.uri,
            "connected": self.connected.is_set(),
            "mode": self.settings.mode,
            "passes": self.passes,
        }
        if self.connected.is_set():
            host = self.hypervisor.host()
            info.update(driver=host.driver, cpus=host.cpus, scheduler=host.scheduler)
        return info

    def stop(self) -> None:
        self.events.close()
        self._stopping.set()
        self._wake.set()

    async def run(self) -> None:
        """Connect, then keep reconciling until stopped."""
        self._loop = asyncio.get_running_loop()
        self.events.bind(self._loop)
        use_asyncio(self._loop)
        try:  # jobs a killed daemon or CLI left "running"
            for job in await asyncio.to_thread(settle, self.store):
                log.warning("job %d interrupted: %s", job.id, job.detail)
        except StoreError as exc:
            log.error("store: %s", exc)
        tasks = [
            asyncio.create_task(self._connection_keeper(), name="connection"),
            asyncio.create_task(self._worker(), name="worker"),
            asyncio.create_task(self._periodic(), name="periodic"),
            asyncio.create_task(self._store_watcher(), name="store"),
            asyncio.create_task(self._sampler(), name="sampler"),
        ]
        for task in tasks:
            task.add_done_callback(self._task_done)
        try:
            await self._stopping.wait()
        finally:
            tasks.extend(self._background)
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await asyncio.to_thread(self.hypervisor.close)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        # The tasks loop forever; one that ends has crashed. Stop, so that
        # systemd restarts the daemon, rather than limp on without it.
        if not task.cancelled() and task.exception() is not None:
            log.error("task %s crashed", task.get_name(), exc_info=task.exception())
            self.stop()

    # -- libvirt connection ------------------------------------------------------

    async def _connection_keeper(self) -> None:
        delay = self.settings.backoff_initial
        while True:
            try:
                await asyncio.to_thread(self.hypervisor.open)
                self._watch.register()
            except HypervisorError as exc:
                log.warning("%s; retrying in %.1f s", exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.settings.backoff_max)
                continue
            log.info(
                "connected to %s (%s driver)", self.settings.uri, self.hypervisor.host().driver
            )
            try:
                infos = await asyncio.to_thread(self.hypervisor.guests)
            except HypervisorError as exc:
                log.warning("%s; reconnecting in %.1f s", exc, delay)
                await asyncio.to_thread(self.hypervisor.close)
                await asyncio.sleep(delay)
                continue
            self.states = {info.name: info.state for info in infos}
            if self.settings.autostart and not self._autostarted:
                self._autostarted = True
                self._in_background(self._autostart())
            delay = self.settings.backoff_initial
            self._lost.clear()
            self.connected.set()
            self.request()  # after a (re)connect, check everything
            await self._lost.wait()
            self.connected.clear()
            await asyncio.to_thread(self.hypervisor.close)

    def _connection_closed(self, reason: str) -> None:
        log.warning("connection to %s closed (%s); reconnecting", self.settings.uri, reason)
        self._lost.set()

    def _guest_event(self, guest: str, what: str) -> None:
        log.debug("event guest=%s %s", guest, what)
        self.record_state(guest, what)
        self.events.publish("lifecycle", guest=guest, event=what)
        # SHUTDOWN (the guest OS finished) is followed by STOPPED: act once.
        if what in ("stopped", "crashed"):
            self._in_background(self._dependency_stopped(guest, what))
        if what not in ("stopped", "shutdown", "undefined", "crashed", "suspended"):
            self.request(guest)

    def _in_background(self, work: Coroutine[Any, Any, None]) -> None:
        """Run ``work`` alongside the loop; cancelled when the daemon stops."""
        task = asyncio.create_task(work)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def policies(self) -> Mapping[str, GuestPolicy]:
        """Every stored policy by guest; threads may call it. Read again only when
        the store's global revision moved: reading 10,000 policies takes some
        300 ms, the revision under 1 ms, and the sampler asks every interval."""
        revision = self.store.global_revision()
        cached = self._policy_cache
        if cached is None or cached[0] != revision:
            # Read after the revision: a write in between only makes the next
            # call read again, never keeps an older list under a newer revision.
            cached = (revision, {s.policy.guest: s.policy for s in self.store.list_policies()})
            self._policy_cache = cached
        return cached[1]

    async def _policies(self, why: str) -> Mapping[str, GuestPolicy] | None:
        """:meth:`policies`, or None (logged) if the store fails."""
        try:
            return await asyncio.to_thread(self.policies)
        except StoreError as exc:
            log.error("%s: store: %s", why, exc)
            return None

    async def _autostart(self) -> None:
        """Start guests with ``start.autostart`` in dependency order, once per daemon
        start (that is, host boot), as a job. Their hooks ask us while we start them."""
        policies = await self._policies("autostart")
        if policies is None:
            return
        roots = sorted(g for g, p in policies.items() if p.start.autostart)
        if roots:
            await self._job(JobRequest(action="start", guests=roots), "virtpolicy (autostart)")

    async def _dependency_stopped(self, dependency: str, what: str) -> None:
        """``dependency`` stopped or crashed: tell the guests that require it, and stop
        those whose policy says ``stop.on_dependency_stop: stop``."""
        policies = await self._policies("dependency stop")
        if policies is None:
            return
        affected = [
            g
            for g, p in policies.items()
            if self.states.get(g) == "running" and any(d.guest == dependency for d in p.requires)
        ]
        to_stop = []
        for guest in affected:
            action = policies[guest].stop.on_dependency_stop
            text = f"required dependency {dependency} {what}"
            if action == "stop":
                text += "; stopping this guest (on_dependency_stop: stop)"
                to_stop.append(guest)
            self.reconciler.notice(guest, text)
            log.warning("dependency guest=%s %s", guest, text)
            self.events.publish(
                "dependency", guest=guest, dependency=dependency, event=what, action=action
            )
        if to_stop:
            request = JobRequest(action="stop", guests=to_stop)
            await self._job(request, f"virtpolicy (on_dependency_stop of {dependency})")

    async def _job(self, request: JobRequest, actor: str) -> None:
        """Run a job of the daemon's own to its end."""
        try:
            run = await self._record_job(request, actor)
        except VirtpolicyError as exc:
            log.error("%s %s: %s", actor, request.action, exc)
            return
        await self._run_job(run)

    async def _record_job(self, request: JobRequest, actor: str) -> JobRun:
        """A job planned and recorded, to be run by :meth:`_run_job`."""
        run = JobRun(self.store, self.hypervisor, request, actor, "daemon")
        run.progress = self._job_progress(run)
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

    async def _run_job(self, run: JobRun) -> None:
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

    def _job_progress(self, run: JobRun) -> Progress:
        def progress(guest: str, event: str, detail: str) -> None:
            if event in ("started", "already running"):
                # Before any dependent starts, so that its hook sees this one up.
                self.record_state(guest, "started")
            assert run.job is not None
            self.events.publish("job", job=run.job.id, guest=guest, result=event, detail=detail)
            if event not in IN_FLIGHT:
                log.info(
                    "job=%d guest=%s %s%s",
                    run.job.id,
                    guest,
                    event,
                    f": {detail}" if detail else "",
                )

        return progress

    def record_state(self, guest: str, what: str) -> None:
        """Keep ``states`` current from a lifecycle event or a hook report."""
        state = _STATE_AFTER.get(what)
        if what == "undefined":
            self.states.pop(guest, None)
        elif state:
            self.states[guest] = state
        elif guest not in self.states and what == "defined":
            self.states[guest] = "shut off"

    # -- triggers and the worker ----------------------------------------------------

    async def _periodic(self) -> None:
        while True:
            await asyncio.sleep(self.settings.reconcile_interval)
            self.request()

    async def _sampler(self) -> None:
        """One bulk statistics call every sample interval, while connected."""
        interval = self.settings.sample_interval
        while True:
            await self.connected.wait()
            began = time.monotonic()
            cpu = time.thread_time
            try:
                sample, used = await asyncio.to_thread(_timed, self.hypervisor.sample, cpu)
            except HypervisorError as exc:
                self.monitor.failed(str(exc))
                log.warning("statistics: %s", exc)
            else:
                rates = self.monitor.ingest(sample, used)
                if any(name != "static" for name in self.dynamic.names):
                    await self._decide()
                self.events.publish(
                    "stats",
                    keep=False,
                    guests=[g.to_dict() for g in rates.guests.values()],
                    host_busy_percent=[
                        None if b is None else round(b, 2) for b in rates.host_busy_percent
                    ],
                )
            await asyncio.sleep(max(0.0, interval - (time.monotonic() - began)))

    async def _decide(self) -> None:
        """Run the dynamic policies on the newest statistics; log and publish."""
        try:
            decisions = await asyncio.to_thread(self._decide_now)
        except (HypervisorError, StoreError) as exc:
            log.warning("dynamic policies: %s", exc)
            return
        for d in decisions:
            if d.outcome.startswith(("waiting", "no change", "rate limit")):
                continue  # routine, every sample: in the decision log only
            log.info(
                "decision engine=%s guest=%s %s%s=%s %s: %s",
                d.engine,
                d.guest,
                d.kind,
                "" if d.vcpu is None else f".{d.vcpu}",
                d.value,
                d.outcome,
                d.reason,
            )
            self.events.publish("decision", **d.to_dict())

    def _decide_now(self) -> list[Decision]:
        """(In a thread.) Current pins and caps of running guests with a policy,
        then one round of the dynamic engine, applying live."""
        latest = self.monitor.latest
        if latest is None:
            return []
        policies = self.policies()
        host = self.hypervisor.host()
        live = _LiveTuning(
            self.hypervisor,
            [n for n, r in latest.guests.items() if r.running and n in policies],
        )

        def apply(action: Action) -> str | None:
            try:
                if action.kind == "vcpupin" and action.vcpu is not None:
                    cpus = frozenset(parse_cpuset(str(action.value)))
                    self.hypervisor.place(action.guest, action.vcpu, cpus)
                elif action.kind == "cap":
                    value = action.value if isinstance(action.value, int) else None
                    self.hypervisor.set_cap(action.guest, value)
            except HypervisorError as exc:
                return str(exc)
            return None

        return self.dynamic.run(
            list(self.monitor.recent), policies, host.cpus, live.pins, live.caps, apply
        )

    async def _store_watcher(self) -> None:
        seen = None
        while True:
            try:
                revision = await asyncio.to_thread(self.store.global_revision)
                if seen is not None and revision != seen:
                    self.request()
                    await self._policy_events(seen, revision)
                seen = revision
            except StoreError as exc:
                log.warning("store: %s", exc)
            await asyncio.sleep(self.settings.store_poll_interval)

    async def _policy_events(self, seen: int, revision: int) -> None:
        """One event per policy written since ``seen``; one in all for a large apply."""
        written = await asyncio.to_thread(self.store.revisions_since, seen, _POLICY_EVENTS + 1)
        if len(written) > _POLICY_EVENTS:
            self.events.publish("policy", guests=None, revision=revision)
            return
        for r in written:
            self.events.publish(
                "policy", guest=r.guest, revision=r.revision, action=r.action, actor=r.actor
            )

    async def _worker(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            await self.connected.wait()
            dirty, self._dirty = self._dirty, set()
            if not dirty:
                continue
            guests = None if _ALL in dirty else sorted(dirty)
            try:
                await asyncio.to_thread(self.reconciler.reconcile, guests)
                self.passes += 1
            except ConnectionLostError as exc:
                log.warning("%s", exc)
                self._dirty |= dirty  # redo after the reconnect
                self._lost.set()
            except StoreError as exc:
                log.warning("store: %s", exc)
                self._dirty |= dirty
                await asyncio.sleep(self.settings.backoff_initial)
                self._wake.set()
            except Exception:
                # Top of a long-running loop: log with traceback and go on.
                log.exception("reconcile pass failed")


T = TypeVar("T")


def _timed(call: Callable[[], T], clock: Callable[[], float]) -> tuple[T, float]:
    """``call()`` and the CPU time it took on this thread (``clock`` is thread_time)."""
    before = clock()
    result = call()
    return result, clock() - before


class _LiveTuning:
    """Running guests' live tuning for one round of dynamic policies, read from
    libvirt the first time something asks about a guest (four calls each): a
    round whose policies look at a few guests costs a few reads, not four calls
    for every guest with a policy. ``pins`` and ``caps`` are the views a
    :class:`~virtpolicy.engine.policies.Context` takes."""

    def __init__(self, hypervisor: Hypervisor, guests: Collection[str]) -> None:
        self._hypervisor = hypervisor
        self.guests = guests
        self._read: dict[str, Tuning | None] = {}
        self.pins = _Pins(self)
        self.caps = _Caps(self)

    def of(self, guest: str) -> Tuning | None:
        """The guest's tuning; None if it is not one of ours, or is gone."""
        if guest not in self._read:
            tuning = None
            if guest in self.guests:
                # Undefined since the sample: nothing to place.
                with contextlib.suppress(GuestNotFoundError):
                    tuning = self._hypervisor.actual(guest, True)
            self._read[guest] = tuning
        return self._read[guest]

    def cap(self, guest: str) -> int | None:
        tuning = self.of(guest)
        if tuning is None:
            raise KeyError(guest)
        return cap_of(tuning.sched, self._hypervisor.host().scheduler)


class _Pins(Mapping[tuple[str, int], frozenset[int]]):
    def __init__(self, live: _LiveTuning) -> None:
        self._live = live

    def __getitem__(self, key: tuple[str, int]) -> frozenset[int]:
        tuning = self._live.of(key[0])
        if tuning is None or key[1] not in tuning.vcpupin:
            raise KeyError(key)
        return tuning.vcpupin[key[1]]

    def __iter__(self) -> Iterator[tuple[str, int]]:
        for guest in self._live.guests:
            tuning = self._live.of(guest)
            yield from ((guest, v) for v in (tuning.vcpupin if tuning else ()))

    def __len__(self) -> int:
        return sum(1 for _ in self)


class _Caps(Mapping[str, int | None]):
    def __init__(self, live: _LiveTuning) -> None:
        self._live = live

    def __getitem__(self, guest: str) -> int | None:
        return self._live.cap(guest)

    def __iter__(self) -> Iterator[str]:
        return (g for g in self._live.guests if self._live.of(g) is not None)

    def __len__(self) -> int:
        return sum(1 for _ in self)
